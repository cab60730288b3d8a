//! REST paths through the gateway: every model-scoped v2 path of a group reaches a
//! member with exactly the member's path (query kept); everything else is untouched.

use modelsplit_e2e::fixture::{exposed, group, Fixture};
use modelsplit_e2e::observe::{Observed, ROUTED_HEADER};
use modelsplit_e2e::standin::StandInConfig;
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::requests_counter_name;

const NS: &str = "apps";
const MEMBERS: [&str; 2] = ["ai-model-one", "ai-model-two"];

async fn fixture() -> Fixture {
    let config = FilterConfig::with_groups(vec![group(
        NS,
        "ai-model",
        &[(MEMBERS[0], 50), (MEMBERS[1], 50)],
    )]);
    let isvcs = exposed(NS, &[MEMBERS[0], MEMBERS[1], "plain-model"]);
    Fixture::start(&config, &isvcs, vec![StandInConfig::any_model(NS)]).await
}

async fn group_counters(fx: &Fixture) -> Vec<u64> {
    let stats = fx.gateway.stats_settled("modelsplit").await.expect("stats");
    MEMBERS
        .iter()
        .map(|m| stats.get(&requests_counter_name(NS, "ai-model", m)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_scoped_path_reaches_the_member_path_exactly() {
    let fx = fixture().await;
    let cases = [
        ("POST", "/infer"),
        ("GET", ""),
        ("GET", "/ready"),
        ("POST", "/versions/7/infer"),
        ("GET", "/versions/7"),
        ("GET", "/versions/7/ready"),
        ("POST", "/infer?trace=1&note=a%2Fb"),
        ("GET", "?verbose=true"),
        ("GET", "/ready?x=ai-model"),
    ];
    for (method, suffix) in cases {
        let mut seen = std::collections::BTreeSet::new();
        // 50/50: over 40 requests both members appear (probability of not: 2^-39).
        for _ in 0..40 {
            let reply = fx
                .rest(
                    method,
                    &format!("/modelmesh/{NS}/v2/models/ai-model{suffix}"),
                    &[],
                )
                .await;
            let observed = Observed::from_rest(&reply);
            assert_eq!(
                observed.problem(NS),
                None,
                "{method} {suffix}: {}",
                reply.text()
            );
            let member = observed.model.clone().unwrap();
            assert!(
                MEMBERS.contains(&member.as_str()),
                "{member} is not a member"
            );
            assert_eq!(
                observed.upstream_path.as_deref(),
                Some(format!("/v2/models/{member}{suffix}").as_str()),
                "{method} {suffix}: the stand-in must receive the member's path and nothing else changed"
            );
            seen.insert(member);
        }
        assert_eq!(seen.len(), 2, "{method} {suffix}: both members serve");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_isvc_and_member_requests_pass_through_untouched() {
    let fx = fixture().await;
    for model in ["plain-model", MEMBERS[0], MEMBERS[1]] {
        for suffix in ["/infer?a=1", "", "/ready", "/versions/2/infer"] {
            let method = if suffix.contains("infer") {
                "POST"
            } else {
                "GET"
            };
            let reply = fx
                .rest(
                    method,
                    &format!("/modelmesh/{NS}/v2/models/{model}{suffix}"),
                    &[],
                )
                .await;
            assert_eq!(reply.status, 200, "{model}{suffix}: {}", reply.text());
            let observed = Observed::from_rest(&reply);
            assert_eq!(observed.model.as_deref(), Some(model));
            assert_eq!(
                observed.upstream_path,
                Some(format!("/v2/models/{model}{suffix}"))
            );
            assert_eq!(
                observed.routed_to, None,
                "{model}{suffix}: the filter did not route it"
            );
        }
    }
    assert_eq!(
        group_counters(&fx).await,
        [0, 0],
        "direct requests are not group requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn look_alike_and_foreign_paths_are_left_alone() {
    let fx = fixture().await;
    let paths = [
        format!("/modelmesh/{NS}/v2/models/ai-modelX/infer"),
        format!("/modelmesh/{NS}/v2/models/ai-model-x/infer"),
        format!("/modelmesh/{NS}/v2/models//ai-model/infer"),
        format!("/modelmesh/{NS}/v2/models/ai-model%2Finfer"),
        format!("/modelmesh/{NS}//v2/models/ai-model/infer"),
        "/modelmesh/other/v2/models/ai-model/infer".to_string(),
        format!("/modelmesh/{NS}/v1/models/ai-model:predict"),
        format!("/modelmeshx/{NS}/v2/models/ai-model/infer"),
        "/v2/models/ai-model/infer".to_string(),
        "/healthz".to_string(),
    ];
    for path in &paths {
        let reply = fx.rest("POST", path, &[]).await;
        assert_eq!(
            reply.header(ROUTED_HEADER),
            None,
            "{path} was routed by the filter"
        );
        // None of these has a route: Envoy answers 404 itself and nothing reaches ModelMesh.
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
    }
    assert_eq!(
        fx.standin(NS).received(),
        vec![],
        "nothing reached the stand-in"
    );
    assert_eq!(group_counters(&fx).await, [0, 0]);
}
