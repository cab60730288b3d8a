//! Properties of the routing core over generated configurations and requests:
//! - any accepted configuration routes a group request only to a member of that group;
//! - override never escapes the group, and a member named by it is always used;
//! - weighted and sticky shares converge to the weights;
//! - sticky is a pure function of (group, key): other groups, member order, the
//!   random state and repeated calls change nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg(not(target_arch = "wasm32"))]

use modelsplit_filter::choose::{self, How, Rng};
use modelsplit_filter::config::{FilterConfig, GroupConfig, MemberConfig};
use modelsplit_filter::plan::{Group, Plan};
use modelsplit_filter::route::{route, Decision, RequestHeaders, Rewrite};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::RngSeed;

/// Names from a small alphabet, so groups, members and namespaces collide often.
const NAMES: &[&str] = &["a", "b", "ai-model", "ai-model-one", "x.y", "ns", "g_1"];

struct Headers(Vec<(String, Vec<u8>)>);

impl RequestHeaders for Headers {
    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }
}

fn member() -> impl Strategy<Value = MemberConfig> {
    (select(NAMES), prop_oneof![Just(0u32), 0u32..10_001]).prop_map(|(name, weight)| MemberConfig {
        name: name.to_string(),
        weight,
    })
}

fn group() -> impl Strategy<Value = GroupConfig> {
    (
        select(NAMES),
        select(NAMES),
        prop::collection::vec(member(), 0..6),
        any::<bool>(),
        prop::option::of(Just("x-user-id".to_string())),
        any::<bool>(),
    )
        .prop_map(
            |(namespace, name, members, grpc, sticky_header, observe)| GroupConfig {
                namespace: namespace.to_string(),
                name: name.to_string(),
                members,
                grpc,
                sticky_header,
                observe,
            },
        )
}

/// Configurations the filter accepts: generated freely, kept when valid.
fn accepted_config() -> impl Strategy<Value = FilterConfig> {
    prop::collection::vec(group(), 1..8)
        .prop_map(FilterConfig::with_groups)
        .prop_filter("the filter accepts it", |c| c.validate().is_ok())
}

/// A header value that is sometimes a name (of any group's member), sometimes junk.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        select(NAMES).prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn member_names(config: &FilterConfig, namespace: &str, name: &str) -> Vec<String> {
    let group = config
        .groups
        .iter()
        .find(|g| g.namespace == namespace && g.name == name)
        .expect("requested group is in the config");
    group.members.iter().map(|m| m.name.clone()).collect()
}

fn chosen<'p>(plan: &'p Plan, decision: &Decision) -> &'p str {
    &decision.member_in(plan).expect("member of the plan").name
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn group_requests_reach_only_members_of_the_requested_group(
        config in accepted_config(),
        pick in any::<prop::sample::Index>(),
        suffix in select(&["", "/infer", "/ready", "?x=1", "/versions/2/infer"][..]),
        grpc in any::<bool>(),
        override_value in prop::option::of(header_value()),
        sticky_key in prop::option::of(header_value()),
        seed in any::<u64>(),
    ) {
        let plan = Plan::compile(&config).expect("accepted config compiles");
        let requested = pick.get(&config.groups);
        let mut headers = vec![];
        if grpc {
            headers.push((":path".into(), b"/inference.GRPCInferenceService/ModelInfer".to_vec()));
            headers.push(("content-type".into(), b"application/grpc".to_vec()));
            headers.push(("mm-vmodel-id".into(), requested.name.as_bytes().to_vec()));
        } else {
            let path = format!("/modelmesh/{}/v2/models/{}{suffix}", requested.namespace, requested.name);
            headers.push((":path".into(), path.into_bytes()));
        }
        if let Some(v) = &override_value {
            headers.push(("x-modelsplit-member".into(), v.clone()));
        }
        if let Some(v) = &sticky_key {
            headers.push(("x-user-id".into(), v.clone()));
        }
        let decision = route(&plan, &mut Rng::new(seed), &Headers(headers));
        // gRPC names are global on a gateway: the name means the one group with gRPC on.
        let requested = if grpc {
            match config.groups.iter().find(|g| g.grpc && g.name == requested.name) {
                Some(owner) => owner,
                None => {
                    prop_assert!(decision.is_none(), "gRPC routing of a name no gRPC group has");
                    return Ok(());
                }
            }
        } else {
            requested
        };
        let decision = decision.expect("a request for a configured group is routed");
        let group = plan.group(decision.group).unwrap();
        prop_assert_eq!((&*group.namespace, &*group.name), (&*requested.namespace, &*requested.name));
        let member = chosen(&plan, &decision).to_string();
        prop_assert!(member_names(&config, &requested.namespace, &requested.name).contains(&member));
        match (decision.how, &override_value) {
            (How::Override, Some(v)) => prop_assert_eq!(v.as_slice(), member.as_bytes()),
            (How::Override, None) => prop_assert!(false, "override without a header"),
            (_, _) => prop_assert!(group.members[decision.member].weight > 0),
        }
        if let Rewrite::Path(path) = &decision.rewrite {
            let expected = format!("/modelmesh/{}/v2/models/{member}{suffix}", requested.namespace);
            prop_assert_eq!(path.as_slice(), expected.as_bytes());
        }
    }

    #[test]
    fn override_never_escapes_the_group(
        config in accepted_config(),
        pick in any::<prop::sample::Index>(),
        value in header_value(),
        seed in any::<u64>(),
    ) {
        let plan = Plan::compile(&config).unwrap();
        let requested = pick.get(&config.groups);
        let path = format!("/modelmesh/{}/v2/models/{}/infer", requested.namespace, requested.name);
        let headers = Headers(vec![
            (":path".into(), path.into_bytes()),
            ("x-modelsplit-member".into(), value.clone()),
        ]);
        let decision = route(&plan, &mut Rng::new(seed), &headers).unwrap();
        let members = member_names(&config, &requested.namespace, &requested.name);
        let member = chosen(&plan, &decision);
        prop_assert!(members.iter().any(|m| m == member));
        let names_a_member = members.iter().any(|m| m.as_bytes() == value.as_slice());
        prop_assert_eq!(decision.how == How::Override, names_a_member);
        prop_assert_eq!(decision.override_ignored, !names_a_member);
        if names_a_member {
            prop_assert_eq!(member.as_bytes(), value.as_slice());
        }
    }

    #[test]
    fn sticky_is_a_pure_function_of_group_and_key(
        config in accepted_config(),
        pick in any::<prop::sample::Index>(),
        key in prop::collection::vec(any::<u8>(), 1..24),
        seeds in (any::<u64>(), any::<u64>()),
        other_groups in prop::collection::vec(group(), 0..4),
    ) {
        let mut config = config;
        let at = pick.index(config.groups.len());
        config.groups[at].sticky_header = Some("x-user-id".into());
        let requested = config.groups[at].clone();
        let plan = Plan::compile(&config).unwrap();

        // The same group in another configuration: members reversed, other groups around it.
        let mut reordered = requested.clone();
        reordered.members.reverse();
        let mut groups: Vec<GroupConfig> = other_groups
            .into_iter()
            .filter(|g| (&g.namespace, &g.name) != (&requested.namespace, &requested.name))
            .map(|g| GroupConfig { grpc: false, ..g })
            .collect();
        groups.push(GroupConfig { grpc: false, ..reordered });
        let other = FilterConfig::with_groups(groups);
        prop_assume!(other.validate().is_ok());
        let other_plan = Plan::compile(&other).unwrap();

        let path = format!("/modelmesh/{}/v2/models/{}", requested.namespace, requested.name);
        let headers = Headers(vec![
            (":path".into(), path.into_bytes()),
            ("x-user-id".into(), key.clone()),
        ]);
        let first = route(&plan, &mut Rng::new(seeds.0), &headers).unwrap();
        let again = route(&plan, &mut Rng::new(seeds.1), &headers).unwrap();
        let elsewhere = route(&other_plan, &mut Rng::new(seeds.1), &headers).unwrap();
        prop_assert_eq!(first.how, How::Sticky);
        prop_assert_eq!(chosen(&plan, &first), chosen(&plan, &again));
        prop_assert_eq!(chosen(&plan, &first), chosen(&other_plan, &elsewhere));
    }
}

fn single_group(weights: &[u32], sticky: bool) -> (Plan, Group) {
    let members = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| MemberConfig {
            name: format!("m{i}"),
            weight,
        })
        .collect();
    let config = FilterConfig::with_groups(vec![GroupConfig {
        namespace: "ns".into(),
        name: "g".into(),
        members,
        grpc: true,
        sticky_header: sticky.then(|| "x-user-id".into()),
        observe: false,
    }]);
    let plan = Plan::compile(&config).unwrap();
    let group = plan.groups()[0].clone();
    (plan, group)
}

/// Each member's count is within 5 standard deviations of `n * share`, plus a few
/// counts of slack so that tiny shares (a handful of expected hits) do not flake.
fn assert_converges(counts: &[u64], weights: &[u32], n: u64) -> Result<(), TestCaseError> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    for (i, (&count, &weight)) in counts.iter().zip(weights).enumerate() {
        let p = weight as f64 / total as f64;
        let expected = p * n as f64;
        let tolerance = 5.0 * (expected * (1.0 - p)).sqrt() + 6.0;
        if weight == 0 {
            prop_assert_eq!(count, 0, "member {} has weight 0", i);
        }
        prop_assert!(
            (count as f64 - expected).abs() <= tolerance,
            "member {}: {} hits, {} expected (tolerance {})",
            i,
            count,
            expected,
            tolerance
        );
    }
    Ok(())
}

fn weights() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(prop_oneof![Just(0u32), 1u32..10_001], 1..6)
        .prop_filter("some weight", |w| w.iter().any(|&x| x > 0))
}

// Statistical properties: each case's counts must fall within 5 standard deviations of
// the weights, which a correct filter misses now and then over many random cases. A
// fixed seed makes every run draw the same cases, so the tests fail only when the
// routing core changes (a new seed is a code change, checked once).
proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        rng_seed: RngSeed::Fixed(0x6d6f_6465_6c73_706c),
        ..ProptestConfig::default()
    })]

    #[test]
    fn weighted_shares_converge_to_the_weights(weights in weights(), seed in any::<u64>()) {
        let (_, group) = single_group(&weights, false);
        let n = 40_000;
        let mut counts = vec![0u64; weights.len()];
        let mut rng = Rng::new(seed);
        for _ in 0..n {
            counts[choose::weighted(&group, &mut rng).unwrap()] += 1;
        }
        assert_converges(&counts, &weights, n)?;
    }

    #[test]
    fn sticky_shares_converge_to_the_weights(weights in weights(), salt in any::<u64>()) {
        let (_, group) = single_group(&weights, true);
        let n = 40_000;
        let mut counts = vec![0u64; weights.len()];
        for i in 0..n {
            let key = format!("user-{salt}-{i}");
            counts[choose::sticky(&group, key.as_bytes()).unwrap()] += 1;
        }
        assert_converges(&counts, &weights, n)?;
    }
}
