//! Hostile configuration traffic through the real Envoy and filter: a configuration
//! with 10,000 groups loads and routes; a new configuration every 100 ms for 30 s
//! under REST and gRPC load loses no request; and invalid configurations in that
//! stream (each of which would send everything to a poisoned member) never replace
//! the valid one in force.

use modelsplit_e2e::fixture::{exposed, group, Fixture};
use modelsplit_e2e::gateway::{require_filter_wasm, ConfigOutcome};
use modelsplit_e2e::gateway_files::{render_ecds, write_atomically, ExposedIsvc, ECDS_FILE};
use modelsplit_e2e::kserve::ModelInferRequest;
use modelsplit_e2e::load::run_until;
use modelsplit_e2e::observe::{Observed, Tally};
use modelsplit_e2e::standin::StandInConfig;
use modelsplit_filter::config::{FilterConfig, GroupConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "apps";
const PATH: &str = "/modelmesh/apps/v2/models/ai-model/infer";
/// An exposed member that every valid configuration gives weight 0 and every
/// invalid one gives all the weight: any request it answers proves a bad config won.
const POISON: &str = "m-poison";
const MEMBERS: [&str; 4] = ["m-one", "m-two", "m-three", POISON];

fn ai_model(weights: &[(&str, u32)]) -> FilterConfig {
    FilterConfig::with_groups(vec![group(NS, "ai-model", weights)])
}

/// Valid configurations the stream cycles through: weights move, members come and go.
fn valid_configs() -> Vec<FilterConfig> {
    vec![
        ai_model(&[("m-one", 80), ("m-two", 20), (POISON, 0)]),
        ai_model(&[("m-one", 20), ("m-two", 80)]),
        ai_model(&[("m-one", 1), ("m-two", 1), ("m-three", 1)]),
        ai_model(&[("m-three", 100), (POISON, 0)]),
        ai_model(&[("m-two", 5000), ("m-three", 5000)]),
    ]
}

/// Configurations the filter must refuse; each would route everything to POISON.
fn invalid_configs() -> Vec<String> {
    let poison = |extra: &str| {
        format!(
            r#"{{"groups":[{{"namespace":"apps","name":"ai-model","members":[{{"name":"m-poison","weight":100}}{extra}]}}]}}"#
        )
    };
    let nested = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let many_then_bad = {
        let mut groups: Vec<String> = (0..5000)
            .map(|i| format!(r#"{{"namespace":"bulk","name":"g{i}","members":[{{"name":"m{i}","weight":1}}]}}"#))
            .collect();
        groups.push(r#"{"namespace":"apps","name":"ai-model","members":[{"name":"m-poison","weight":100}]}"#.into());
        groups
            .push(r#"{"namespace":"bulk","name":"g0","members":[{"name":"x","weight":1}]}"#.into());
        format!(r#"{{"groups":[{}]}}"#, groups.join(","))
    };
    vec![
        poison(r#",{"name":"m-poison","weight":1}"#),
        poison(r#",{"name":"m-one","weight":0.5}"#),
        poison(r#",{"name":"m-one","weight":-1}"#),
        poison(r#",{"name":"m-one","weight":1e400}"#),
        poison(r#",{"name":"m-one","weight":4294967296}"#),
        poison(r#",{"name":"../m-one","weight":1}"#),
        poison(r#",{"name":"m-one","weight":1,"colour":"red"}"#),
        poison(r#",{"name":"","weight":1}"#),
        poison("").replace(r#""groups""#, r#""restPrefix":"/","groups""#),
        poison("").replace("\"apps\"", "\"apps\\u0000\""),
        poison("") + "trailing",
        poison("")[..40].to_string(),
        nested,
        many_then_bad,
        String::new(),
        "null".into(),
    ]
}

async fn fixture() -> Fixture {
    Fixture::start(
        &valid_configs()[0],
        &exposed(NS, &MEMBERS),
        vec![StandInConfig::only(NS, &MEMBERS)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_groups_load_and_route() {
    // 10,000 groups of two members (20,000 per-member counters); routes only for the
    // members of the groups this test calls.
    let groups: Vec<GroupConfig> = (0..10_000)
        .map(|i| {
            let mut g = group(
                "bulk",
                &format!("group-{i:05}"),
                &[(&format!("g{i:05}-a"), 50), (&format!("g{i:05}-b"), 50)],
            );
            g.grpc = i % 2 == 0;
            g
        })
        .collect();
    let config = FilterConfig::with_groups(groups);
    let called = [0usize, 1, 4_999, 9_998, 9_999];
    let isvcs: Vec<ExposedIsvc> = called
        .iter()
        .flat_map(|i| [format!("g{i:05}-a"), format!("g{i:05}-b")])
        .map(|name| ExposedIsvc::new("bulk", &name))
        .collect();
    let started = Instant::now();
    let fx = Fixture::start(&config, &isvcs, vec![StandInConfig::any_model("bulk")]).await;
    eprintln!(
        "10,000 groups ({} bytes of configuration): gateway ready in {:.1} s",
        config.to_json().len(),
        started.elapsed().as_secs_f64()
    );
    for i in called {
        let path = format!("/modelmesh/bulk/v2/models/group-{i:05}/infer");
        let observed = fx.rest_many(40, "POST", &path, |_| vec![]).await;
        let tally = Tally::of(&observed, "bulk");
        assert_eq!(tally.problem_count, 0, "group-{i:05}: {:?}", tally.problems);
        let members: Vec<&String> = tally.by_member.keys().collect();
        assert!(
            members
                .iter()
                .all(|m| *m == &format!("g{i:05}-a") || *m == &format!("g{i:05}-b")),
            "group-{i:05} reached {members:?}"
        );
        if i % 2 == 0 {
            let observed = fx.grpc_many(20, &format!("group-{i:05}"), |_| vec![]).await;
            let tally = Tally::of(&observed, "bulk");
            assert_eq!(
                tally.problem_count, 0,
                "gRPC group-{i:05}: {:?}",
                tally.problems
            );
        }
    }
    let counters = fx
        .gateway
        .stats_filtered("modelsplit.requests.bulk")
        .await
        .unwrap();
    assert_eq!(counters.0.len(), 20_000, "one counter per member");

    // And a configuration this size is replaced at run time like any other.
    let mut smaller = config.clone();
    smaller.groups.truncate(5_000);
    smaller
        .groups
        .push(group("bulk", "group-09999", &[("g09999-b", 1)]));
    fx.gateway.apply_filter_config(&smaller).await.unwrap();
    let observed = fx
        .rest_many(
            40,
            "POST",
            "/modelmesh/bulk/v2/models/group-09999/infer",
            |_| vec![],
        )
        .await;
    let tally = Tally::of(&observed, "bulk");
    assert_eq!(tally.by_member.keys().collect::<Vec<_>>(), ["g09999-b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configurations_never_replace_the_valid_one() {
    let fx = fixture().await;
    let valid = ai_model(&[("m-one", 30), ("m-two", 70), (POISON, 0)]);
    fx.gateway.apply_filter_config(&valid).await.unwrap();
    for (i, json) in invalid_configs().iter().enumerate() {
        let outcome = fx.gateway.push_filter_config_json(json).await.unwrap();
        assert_eq!(
            outcome,
            ConfigOutcome::Rejected,
            "invalid config #{i} was applied"
        );
        let observed = fx.rest_many(200, "POST", PATH, |_| vec![]).await;
        let tally = Tally::of(&observed, NS);
        assert_eq!(tally.problem_count, 0, "after #{i}: {:?}", tally.problems);
        assert!(
            !tally.by_member.contains_key(POISON),
            "after invalid config #{i}, requests reached {POISON}: {:?}",
            tally.by_member
        );
    }
    // Still configurable afterwards.
    fx.gateway
        .apply_filter_config(&ai_model(&[("m-three", 1)]))
        .await
        .unwrap();
    let observed = fx.rest_many(100, "POST", PATH, |_| vec![]).await;
    assert_eq!(
        Tally::of(&observed, NS)
            .by_member
            .keys()
            .collect::<Vec<_>>(),
        ["m-three"]
    );
}

/// The longest e2e test: 30 s of configuration churn under load.
///
/// Writes are paced by Envoy, not by the clock alone: each is written once Envoy's main
/// thread has read the previous one (then 100 ms later), so none is folded into the next
/// and every write's fate is known exactly; workers may still be taking up one
/// configuration when the next arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_every_100_ms_under_load_loses_no_request() {
    const CHURN: Duration = Duration::from_secs(30);
    const EVERY: Duration = Duration::from_millis(100);
    /// However slow the machine, at least this many writes (10 of them invalid).
    const MIN_WRITES: usize = 50;
    let fx = fixture().await;
    let before = ecds_counters(&fx).await;

    let stop = Arc::new(AtomicBool::new(false));
    let rest = {
        let (http, url) = (fx.http.clone(), fx.gateway.url(PATH));
        tokio::spawn(run_until(stop.clone(), 100, 6, move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let reply = http
                    .post_json(&url, &[], &serde_json::json!({"inputs": []}))
                    .await;
                Observed::from_rest(&reply.unwrap_or_else(|e| panic!("{e}")))
            }
        }))
    };
    let grpc = {
        let client = fx.grpc().await;
        tokio::spawn(run_until(stop.clone(), 100, 2, move |i| {
            let mut client = client.clone();
            let mut request = tonic::Request::new(ModelInferRequest {
                id: i.to_string(),
                ..Default::default()
            });
            request
                .metadata_mut()
                .insert("mm-vmodel-id", "ai-model".parse().unwrap());
            async move { Observed::from_grpc(&client.model_infer(request).await) }
        }))
    };

    // Every fifth write is an invalid configuration; Envoy must keep the valid one.
    let wasm = require_filter_wasm();
    let (valid, invalid) = (valid_configs(), invalid_configs());
    let config_dir = fx.gateway.config_dir().to_path_buf();
    let started = Instant::now();
    let mut in_force = valid[0].to_json();
    let (mut writes, mut applied, mut rejected) = (0usize, 0u64, 0u64);
    let mut step = 0usize;
    while started.elapsed() < CHURN || writes < MIN_WRITES {
        let is_invalid = step % 5 == 4;
        let json = if is_invalid {
            invalid[(step / 5) % invalid.len()].clone()
        } else {
            valid[step % valid.len()].to_json()
        };
        step += 1;
        if json == in_force {
            continue; // an unchanged configuration is no update
        }
        let rereads_before = ecds_counters(&fx).await.rereads;
        write_atomically(&config_dir, ECDS_FILE, &render_ecds(&json, &wasm)).unwrap();
        wait_for_ecds("read the configuration written", &fx, |now| {
            now.rereads > rereads_before
        })
        .await;
        if is_invalid {
            rejected += 1;
        } else {
            applied += 1;
            in_force = json;
        }
        writes += 1;
        tokio::time::sleep(EVERY).await;
    }
    // End on a valid configuration and wait until every update has run its course:
    // `config_fail` counts each refused one, `config_reload` each accepted one once
    // every worker has it, and (Envoy 1.40: the update's cleanup runs as the refusal
    // unwinds) each refused one too.
    if in_force != valid[0].to_json() {
        write_atomically(
            &config_dir,
            ECDS_FILE,
            &render_ecds(&valid[0].to_json(), &wasm),
        )
        .unwrap();
        applied += 1;
        writes += 1;
    }
    let settled = wait_for_ecds("take up every configuration written", &fx, |now| {
        now.failures - before.failures == rejected
            && now.reloads - before.reloads == applied + rejected
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (rest, grpc) = (rest.await.unwrap(), grpc.await.unwrap());

    eprintln!(
        "{writes} configuration writes in {:.1} s: {applied} applied, {rejected} rejected; \
         {} REST and {} gRPC requests",
        started.elapsed().as_secs_f64(),
        rest.len(),
        grpc.len()
    );
    assert_eq!(
        (
            settled.failures - before.failures,
            settled.reloads - before.reloads
        ),
        (rejected, applied + rejected),
        "every invalid write refused, every valid one taken up (config_fail, config_reload)\n{}",
        fx.gateway.log_tail(30)
    );
    for (label, observed) in [("REST", &rest), ("gRPC", &grpc)] {
        let tally = Tally::of(observed, NS);
        assert_eq!(
            tally.problem_count,
            0,
            "{label}: {} of {} requests failed during the churn: {:?}",
            tally.problem_count,
            observed.len(),
            tally.problems
        );
        assert!(
            !tally.by_member.contains_key(POISON),
            "{label}: an invalid configuration took effect: {:?}",
            tally.by_member
        );
        assert!(
            tally.by_member.len() >= 3,
            "{label}: the churn changed nothing: {:?}",
            tally.by_member
        );
    }
    fx.gateway
        .stats_filtered("modelsplit")
        .await
        .expect("Envoy still answers its admin API");
}

/// The filter's ECDS subscription: re-reads of its file, configurations taken up
/// (`config_reload`) and refused (`config_fail`).
#[derive(Debug, Clone, Copy)]
struct Ecds {
    rereads: u64,
    reloads: u64,
    failures: u64,
}

async fn ecds_counters(fx: &Fixture) -> Ecds {
    let stats = fx
        .gateway
        .stats_filtered("extension_config_discovery")
        .await
        .unwrap();
    let get = |name: &str| {
        stats.get(&format!(
            "extension_config_discovery.http_filter.modelsplit.{name}"
        ))
    };
    Ecds {
        rereads: get("update_success") + get("update_rejected") + get("update_failure"),
        reloads: get("config_reload"),
        failures: get("config_fail"),
    }
}

/// Polls the ECDS counters until `done`; panics after a generous deadline.
async fn wait_for_ecds(what: &str, fx: &Fixture, done: impl Fn(&Ecds) -> bool) -> Ecds {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = ecds_counters(fx).await;
        if done(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "Envoy did not {what}: {now:?}\n{}",
            fx.gateway.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
