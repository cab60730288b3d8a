//! Automated rollouts through `modelsplit local` and a real Envoy: a canary declared with
//! `modelsplit.io/rollout` is moved through its steps from the gateway's own numbers and
//! promoted, and one that answers with errors is rolled back at once, with the reason in
//! numbers — nobody touches an annotation.

use modelsplit_e2e::infer::{timed_rest_until, Answers};
use modelsplit_e2e::local_gateway::{group_manifest, namespace_manifest, LocalGateway};
use modelsplit_e2e::standin::StandInConfig;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const NS: &str = "apps";
const ROLLOUT: &str =
    "steps=20,100 interval=2s max-error-percent=5 max-p99-ratio=3 min-requests=40";

/// A group whose `canary` (weight 10) declares the rollout beside `stable` (weight 90).
fn rollout_group(group: &str, stable: &str, canary: &str) -> String {
    let members = group_manifest(NS, group, &[(stable, "90"), (canary, "10")]);
    let canary_weight = "serving.kserve.io/canaryTrafficPercent: \"10\"";
    assert!(members.contains(canary_weight));
    members.replace(
        canary_weight,
        &format!("{canary_weight}, modelsplit.io/rollout: \"{ROLLOUT}\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_is_promoted_and_a_failing_one_rolled_back() {
    // `bad` fails every 4th request (25% errors, over the 5% allowed).
    let standin = StandInConfig::only(NS, &["v1", "v2", "old", "bad"]).failing_every("bad", 4);
    let gw = LocalGateway::start(
        &[
            ("namespace.yaml", &namespace_manifest(NS)),
            ("good.yaml", &rollout_group("good-model", "v1", "v2")),
            ("risky.yaml", &rollout_group("risky-model", "old", "bad")),
        ],
        &[standin],
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let answers = Answers::default();
    let loads: Vec<_> = ["good-model", "risky-model"]
        .iter()
        .map(|group| {
            timed_rest_until(
                stop.clone(),
                4,
                gw.http.clone(),
                gw.url(&format!("/modelmesh/{NS}/v2/models/{group}/infer")),
                answers.clone(),
            )
        })
        .collect();

    gw.wait_for_output("rollout apps/good-model: v2 started at 20%")
        .await;
    gw.wait_for_output("rollout apps/risky-model: bad started at 20%")
        .await;
    let rolled_back = gw
        .wait_for_output("rollout apps/risky-model: bad at 0%: ROLLED BACK")
        .await;
    assert!(
        rolled_back.contains("max-error-percent 5"),
        "the reason in numbers: {rolled_back}"
    );
    gw.wait_in_force(NS, "risky-model", &[("old", 10_000), ("bad", 0)], 0)
        .await;

    let advanced = gw
        .wait_for_output("rollout apps/good-model: v2 at 100%: advanced to 100%")
        .await;
    assert!(advanced.contains("0.0% errors"), "{advanced}");
    gw.wait_for_output("rollout apps/good-model: v2 at 100%: promoted")
        .await;
    gw.wait_in_force(NS, "good-model", &[("v1", 0), ("v2", 10_000)], 0)
        .await;

    stop.store(true, Ordering::SeqCst);
    for load in loads {
        let answered = load.await.expect("load task");
        assert!(!answered.is_empty());
    }
    let output = gw.local_output();
    let timeline: Vec<&str> = output.lines().filter(|l| l.contains("rollout")).collect();
    eprintln!("{}", timeline.join("\n"));
    assert_eq!(
        output.matches("ROLLED BACK").count(),
        1,
        "decided once: {output}"
    );
}
