//! Sticky keys, the override header and the routed header through the real Envoy.

use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_filter::config::{FilterConfig, GroupConfig};
use modelsplit_filter::plan::{requests_counter_name, OVERRIDE_IGNORED_COUNTER};
use std::collections::{BTreeMap, BTreeSet};

const NS: &str = "apps";
const WEIGHTS: [(&str, u32); 4] = [("m-one", 60), ("m-two", 30), ("m-few", 10), ("m-off", 0)];
const KEYS: usize = 1000;
const REPEATS: usize = 5;

fn sticky_group() -> GroupConfig {
    let mut sticky = group(NS, "ai-model", &WEIGHTS);
    sticky.sticky_header = Some("x-user-id".into());
    sticky
}

async fn fixture() -> Fixture {
    let members: Vec<&str> = WEIGHTS.iter().map(|(m, _)| *m).collect();
    let config = FilterConfig::with_groups(vec![sticky_group()]);
    Fixture::serving(&config, NS, &members).await
}

fn user(i: usize) -> Vec<(String, String)> {
    vec![("x-user-id".into(), format!("user-{}", i % KEYS))]
}

/// key -> every member that served it; checks each key had exactly one.
fn members_per_key(observed: &[modelsplit_e2e::observe::Observed]) -> BTreeMap<usize, String> {
    let mut per_key: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, o) in observed.iter().enumerate() {
        assert_eq!(o.problem(NS), None);
        per_key
            .entry(i % KEYS)
            .or_default()
            .insert(o.model.clone().unwrap());
    }
    per_key
        .into_iter()
        .map(|(key, members)| {
            assert_eq!(members.len(), 1, "user-{key} was served by {members:?}");
            (key, members.into_iter().next().unwrap())
        })
        .collect()
}

fn keys_per_member(per_key: &BTreeMap<usize, String>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for member in per_key.values() {
        *counts.entry(member.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_always_reaches_the_same_member_and_keys_spread_by_weight() {
    let fx = fixture().await;
    let path = format!("/modelmesh/{NS}/v2/models/ai-model/infer");
    let rest = fx.rest_many(KEYS * REPEATS, "POST", &path, user).await;
    let rest_keys = members_per_key(&rest);

    // Keys (not requests) follow the weights: rendezvous hashing is weighted.
    let split = check_split(&keys_per_member(&rest_keys), &WEIGHTS);
    eprintln!("sticky: {KEYS} keys x {REPEATS} requests, keys per member\n{split}");
    assert!(split.passes(), "{split}");

    // gRPC with the same keys: same member per key as over REST.
    let grpc = fx.grpc_many(KEYS * REPEATS, "ai-model", user).await;
    assert_eq!(
        members_per_key(&grpc),
        rest_keys,
        "gRPC and REST agree per key"
    );

    // A second gateway (other workers, other process) maps every key the same way.
    let other = fixture().await;
    let again = other.rest_many(KEYS, "POST", &path, user).await;
    assert_eq!(
        members_per_key(&again),
        rest_keys,
        "the key -> member map is a pure function"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn override_forces_a_member_even_one_without_weight_and_beats_sticky() {
    let fx = fixture().await;
    let path = format!("/modelmesh/{NS}/v2/models/ai-model/infer");
    for member in ["m-off", "m-two"] {
        fx.standin(NS).clear();
        let observed = fx
            .rest_many(500, "POST", &path, move |i| {
                let mut headers = user(i);
                headers.push(("x-modelsplit-member".into(), member.into()));
                headers
            })
            .await;
        let tally = Tally::of(&observed, NS);
        assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
        assert_eq!(
            tally.by_member,
            BTreeMap::from([(member.to_string(), 500)]),
            "override {member}"
        );
        assert!(fx.standin(NS).received().iter().all(|r| r.model == member));
    }
    let grpc = fx
        .grpc_many(200, "ai-model", |_| {
            vec![("x-modelsplit-member".into(), "m-off".into())]
        })
        .await;
    assert_eq!(
        Tally::of(&grpc, NS).by_member,
        BTreeMap::from([("m-off".to_string(), 200)])
    );
    let m_off = requests_counter_name(NS, "ai-model", "m-off");
    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| stats.get(&m_off) == 700)
        .await
        .unwrap();
    assert_eq!(stats.get(&m_off), 700);
    assert_eq!(stats.get(OVERRIDE_IGNORED_COUNTER), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_naming_a_non_member_is_ignored_and_counted() {
    let fx = fixture().await;
    let path = format!("/modelmesh/{NS}/v2/models/ai-model/infer");
    // Names outside the group: another isvc, the group itself, a prefix, a case variant.
    let strangers = ["plain-model", "ai-model", "m-on", "M-ONE", ""];
    let observed = fx
        .rest_many(2000, "POST", &path, move |i| {
            vec![(
                "x-modelsplit-member".into(),
                strangers[i % strangers.len()].into(),
            )]
        })
        .await;
    let tally = Tally::of(&observed, NS);
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    let split = check_split(&tally.by_member, &WEIGHTS);
    eprintln!("ignored overrides: 2000 requests\n{split}");
    assert!(
        split.passes(),
        "requests with a non-member override follow the weights\n{split}"
    );

    let grpc = fx
        .grpc_many(100, "ai-model", |_| {
            vec![("x-modelsplit-member".into(), "plain-model".into())]
        })
        .await;
    assert_eq!(Tally::of(&grpc, NS).problem_count, 0);

    let stats = fx
        .gateway
        .stats_when("modelsplit", |stats| {
            stats.get(OVERRIDE_IGNORED_COUNTER) == 2100
        })
        .await
        .unwrap();
    // Every non-member value counts; an empty header value is present too.
    assert_eq!(
        stats.get(OVERRIDE_IGNORED_COUNTER),
        2100,
        "{:?}",
        stats.matching("override")
    );
}
