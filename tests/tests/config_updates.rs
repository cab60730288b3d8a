//! Filter configurations pushed at run time through ECDS: valid ones take over,
//! invalid ones are rejected as a whole while the previous split keeps serving.

use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::gateway::ConfigOutcome;
use modelsplit_e2e::infer::rest_infer;
use modelsplit_e2e::load::run_until;
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::CONFIG_REJECTED_COUNTER;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const NS: &str = "apps";
const PATH: &str = "/modelmesh/apps/v2/models/ai-model/infer";

async fn fixture(weights: &[(&str, u32)]) -> Fixture {
    let config = FilterConfig::with_groups(vec![group(NS, "ai-model", weights)]);
    let members = ["m-one", "m-two", "m-three"];
    Fixture::serving(&config, NS, &members).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_configuration_takes_over_at_run_time() {
    let fx = fixture(&[("m-one", 80), ("m-two", 20)]).await;

    let all_to_two =
        FilterConfig::with_groups(vec![group(NS, "ai-model", &[("m-one", 0), ("m-two", 100)])]);
    fx.gateway.apply_filter_config(&all_to_two).await.unwrap();
    let observed = fx.rest_many(1000, "POST", PATH, |_| vec![]).await;
    assert_eq!(
        Tally::of(&observed, NS).by_member,
        BTreeMap::from([("m-two".to_string(), 1000)])
    );

    // Adding a member.
    let weights = [("m-one", 20), ("m-two", 30), ("m-three", 50)];
    fx.gateway
        .apply_filter_config(&FilterConfig::with_groups(vec![group(
            NS, "ai-model", &weights,
        )]))
        .await
        .unwrap();
    let observed = fx.rest_many(4000, "POST", PATH, |_| vec![]).await;
    let tally = Tally::of(&observed, NS);
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    let split = check_split(&tally.by_member, &weights);
    eprintln!("after adding a member: 4000 requests\n{split}");
    assert!(split.passes(), "{split}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_are_rejected_and_the_previous_split_keeps_serving() {
    let weights = [("m-one", 30), ("m-two", 70)];
    let fx = fixture(&weights).await;
    // Each of these would visibly change routing if it were taken.
    let invalid = [
        ("bad JSON", r#"{"groups":[{"namespace":"apps","#.to_string(), "invalid filter configuration JSON"),
        (
            "zero total weight",
            r#"{"groups":[{"namespace":"apps","name":"ai-model","members":[{"name":"m-one","weight":0},{"name":"m-two","weight":0}]}]}"#.to_string(),
            "the member weights sum to 0",
        ),
        (
            "duplicate member",
            r#"{"groups":[{"namespace":"apps","name":"ai-model","members":[{"name":"m-one","weight":100},{"name":"m-one","weight":1},{"name":"m-two","weight":0}]}]}"#.to_string(),
            "lists member \"m-one\" twice",
        ),
        (
            "unknown field",
            r#"{"groups":[{"namespace":"apps","name":"ai-model","members":[{"name":"m-one","weight":100}]}],"colour":"blue"}"#.to_string(),
            "unknown field `colour`",
        ),
        (
            "fractional weight",
            r#"{"groups":[{"namespace":"apps","name":"ai-model","members":[{"name":"m-one","weight":99.5},{"name":"m-two","weight":0.5}]}]}"#.to_string(),
            "must be a non-negative integer",
        ),
    ];

    // Traffic keeps flowing while the bad configurations arrive.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (http, url) = (fx.http.clone(), fx.gateway.url(PATH));
        tokio::spawn(run_until(stop.clone(), 2000, 8, move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move { rest_infer(&http, &url).await }
        }))
    };

    for (label, json, message) in &invalid {
        let rejected_before = fx
            .gateway
            .stats_filtered("modelsplit")
            .await
            .unwrap()
            .get(CONFIG_REJECTED_COUNTER);
        let outcome = fx.gateway.push_filter_config_json(json).await.unwrap();
        assert_eq!(outcome, ConfigOutcome::Rejected, "{label} was accepted");
        let rejected = fx
            .gateway
            .stats_when("modelsplit", |stats| {
                stats.get(CONFIG_REJECTED_COUNTER) > rejected_before
            })
            .await
            .unwrap()
            .get(CONFIG_REJECTED_COUNTER);
        assert!(
            rejected > rejected_before,
            "{label}: {CONFIG_REJECTED_COUNTER} did not count it"
        );
        let log = fx.gateway.log();
        assert!(
            log.lines()
                .any(|l| l.contains("rejected configuration") && l.contains(message)),
            "{label}: no log line naming the problem ({message})\n{}",
            fx.gateway.log_tail(20)
        );
    }

    stop.store(true, Ordering::Relaxed);
    let observed = load.await.unwrap();
    let tally = Tally::of(&observed, NS);
    assert_eq!(
        tally.problem_count, 0,
        "requests failed during the pushes: {:?}",
        tally.problems
    );
    let during = check_split(&tally.by_member, &weights);
    eprintln!(
        "30/70 while 5 invalid configurations were pushed: {} requests\n{during}",
        observed.len()
    );
    assert!(during.passes(), "{during}");

    let after = fx.rest_many(4000, "POST", PATH, |_| vec![]).await;
    let after = check_split(&Tally::of(&after, NS).by_member, &weights);
    eprintln!("30/70 after the invalid configurations: 4000 requests\n{after}");
    assert!(
        after.passes(),
        "the previous split must keep serving\n{after}"
    );
}
