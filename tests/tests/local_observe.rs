//! The filter's own measurements of an observed group, through `modelsplit local` and a
//! real Envoy: a group whose canary declares a rollout is published with `observe: true`,
//! and after REST and gRPC traffic (the canary failing every 4th request) the admin API
//! shows each member's REST errors exactly as the clients saw them and one latency value
//! per answered request; a group without a rollout has none of these statistics.
//!
//! `MODELSPLIT_BLESS=1` also writes what the admin API answered to
//! `controller/src/status/testdata/` (`admin-observed.json`, `prometheus-observed.txt`),
//! the samples the status parsers' unit tests read.

use modelsplit_controller::local::envoy_files::LATENCY_BUCKETS_MS;
use modelsplit_controller::status::observed::{
    parse_observed_stats, ObservedReadings, OBSERVED_PROMETHEUS_QUERY, OBSERVED_STATS_QUERY,
};
use modelsplit_e2e::infer::{model_name_request, try_rest_infer, vmodel_request};
use modelsplit_e2e::load::run_many;
use modelsplit_e2e::local_gateway::{group_manifest, namespace_manifest, LocalGateway};
use modelsplit_e2e::observe::Observed;
use modelsplit_e2e::standin::StandInConfig;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const NS: &str = "apps";
/// Started, never judged (a million requests) nor advanced (an hour): the canary stays at
/// 50 % while the test counts.
const ROLLOUT: &str = "steps=50,100 interval=60m min-requests=1000000";
const REST_CALLS: usize = 240;
const GRPC_CALLS: usize = 120;

/// `risky-model`: `stable` 90, `canary-v2` 10 declaring the rollout. `calm`: `a` and `b`, no rollout.
fn manifests() -> (String, String) {
    let risky = group_manifest(NS, "risky-model", &[("stable", "90"), ("canary-v2", "10")]);
    let canary_weight = "serving.kserve.io/canaryTrafficPercent: \"10\"";
    assert!(risky.contains(canary_weight));
    let risky = risky.replace(
        canary_weight,
        &format!("{canary_weight}, modelsplit.io/rollout: \"{ROLLOUT}\""),
    );
    let calm = group_manifest(NS, "calm", &[("a", "50"), ("b", "50")]);
    (risky, calm)
}

/// REST then gRPC (half by `model_name`, half by `mm-vmodel-id`) calls to `group`.
async fn traffic(gw: &LocalGateway, group: &str) -> (Vec<Observed>, Vec<Observed>) {
    let (http, url) = (
        gw.http.clone(),
        gw.url(&format!("/modelmesh/{NS}/v2/models/{group}/infer")),
    );
    let rest = run_many(REST_CALLS, 8, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            try_rest_infer(&http, &url)
                .await
                .unwrap_or_else(|e| panic!("REST call: {e}"))
        }
    })
    .await;
    let client = gw.grpc().await;
    let group = group.to_string();
    let grpc = run_many(GRPC_CALLS, 8, move |i| {
        let mut client = client.clone();
        let request = if i % 2 == 0 {
            model_name_request(&group)
        } else {
            vmodel_request(&group)
        };
        async move { Observed::from_grpc(&client.model_infer(request).await) }
    })
    .await;
    (rest, grpc)
}

/// Per member: (answers, REST 5xx, gRPC errors), from what the clients saw.
fn seen(rest: &[Observed], grpc: &[Observed]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut seen: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    for o in rest.iter().chain(grpc) {
        let member = o
            .routed_to
            .clone()
            .unwrap_or_else(|| panic!("every answer names its member: {o:?}"));
        seen.entry(member).or_default().0 += 1;
    }
    for o in rest.iter().filter(|o| o.status >= 500) {
        seen.get_mut(o.routed_to.as_deref().unwrap()).unwrap().1 += 1;
    }
    for o in grpc.iter().filter(|o| o.status != 0) {
        seen.get_mut(o.routed_to.as_deref().unwrap()).unwrap().2 += 1;
    }
    seen
}

async fn admin(gw: &LocalGateway, path: &str) -> String {
    let reply = gw
        .http
        .get(&format!("{}{path}", gw.admin_url), &[])
        .await
        .unwrap_or_else(|e| panic!("admin {path}: {e}"));
    assert_eq!(reply.status, 200, "admin {path}: {}", reply.text());
    reply.text()
}

/// The filter's measurements of `risky-model`, once they match what the clients saw (counters
/// reach `/stats` within a second, histograms on Envoy's next stats flush), or the last
/// reading after 15 s.
async fn settled(
    gw: &LocalGateway,
    expected: &BTreeMap<String, (u64, u64, u64)>,
) -> (String, ObservedReadings) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let json = admin(gw, OBSERVED_STATS_QUERY).await;
        let readings = parse_observed_stats(&json);
        let matches = expected.iter().all(|(member, &(answers, rest, grpc))| {
            readings
                .get(&(NS.into(), "risky-model".into(), member.clone()))
                .is_some_and(|m| {
                    (m.answered(), m.rest_errors, m.grpc_errors) == (answers, rest, grpc)
                })
        });
        if matches || Instant::now() > deadline {
            return (json, readings);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observed_group_has_its_members_errors_and_latencies_and_another_group_none() {
    let standin =
        StandInConfig::only(NS, &["stable", "canary-v2", "a", "b"]).failing_every("canary-v2", 4);
    let (risky, calm) = manifests();
    let gw = LocalGateway::start(
        &[
            ("namespace.yaml", &namespace_manifest(NS)),
            ("risky.yaml", &risky),
            ("calm.yaml", &calm),
        ],
        &[standin],
    )
    .await;
    gw.wait_for_output("rollout apps/risky-model: canary-v2 started at 50%")
        .await;
    gw.wait_in_force(
        NS,
        "risky-model",
        &[("stable", 5000), ("canary-v2", 5000)],
        0,
    )
    .await;

    let (rest, grpc) = traffic(&gw, "risky-model").await;
    let (calm_rest, calm_grpc) = traffic(&gw, "calm").await;
    assert!(calm_rest
        .iter()
        .chain(&calm_grpc)
        .all(|o| o.status == 0 || o.status == 200));
    let expected = seen(&rest, &grpc);
    let canary = expected.get("canary-v2").copied().unwrap_or_default();
    assert!(
        canary.1 > 0 && canary.2 > 0,
        "the canary failed REST and gRPC calls: {expected:?}"
    );
    assert_eq!(
        expected.get("stable").map(|s| (s.1, s.2)),
        Some((0, 0)),
        "{expected:?}"
    );

    let (json, readings) = settled(&gw, &expected).await;
    for (member, &(answers, rest_errors, grpc_errors)) in &expected {
        let key = (NS.to_string(), "risky-model".to_string(), member.clone());
        let measured = readings
            .get(&key)
            .unwrap_or_else(|| panic!("no statistics for {member}: {json}"));
        assert_eq!(
            measured.rest_errors, rest_errors,
            "{member}: REST errors as the clients saw 5xx: {json}"
        );
        assert_eq!(
            measured.grpc_errors, grpc_errors,
            "{member}: gRPC errors: {json}"
        );
        assert_eq!(
            measured.answered(),
            answers,
            "{member}: one latency per answered request (REST and gRPC): {json}"
        );
        let bounds: Vec<f64> = measured.latency.iter().map(|(b, _)| *b).collect();
        assert_eq!(
            bounds, LATENCY_BUCKETS_MS,
            "{member}: the bootstrap's buckets"
        );
    }
    assert!(
        !readings.keys().any(|(_, group, _)| group == "calm"),
        "no measurements of a group without a rollout: {json}"
    );
    let all = admin(&gw, "/stats").await;
    assert!(
        !all.lines()
            .any(|l| l.contains(".calm.") && !l.contains("modelsplit.requests.")),
        "{all}"
    );

    let prometheus = admin(&gw, OBSERVED_PROMETHEUS_QUERY).await;
    assert!(
        prometheus.contains("# TYPE modelsplit_rest_errors_apps_risky_model_canary_v2 counter"),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("modelsplit_latency_ms_apps_risky_model_canary_v2_bucket{le=\"1\"} ")
            && prometheus.contains("modelsplit_latency_ms_apps_risky_model_canary_v2_count{} "),
        "{prometheus}"
    );
    if std::env::var_os("MODELSPLIT_BLESS").is_some() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controller/src/status/testdata");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("admin-observed.json"), &json).unwrap();
        std::fs::write(dir.join("prometheus-observed.txt"), &prometheus).unwrap();
        eprintln!(
            "wrote the samples to {}; what the clients saw: {expected:?}",
            dir.display()
        );
    }
}
