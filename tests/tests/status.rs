//! `modelsplit status` against a real Envoy running the filter: the configured weights from
//! its config_dump, the observed shares from the filter's counters, and the drift verdict.
//! Traffic is sent with the override header, so the counts are exact and no verdict here
//! depends on chance.

use std::process::{Command, Output};
use std::time::Duration;

use modelsplit_e2e::fixture::{exposed, group, Fixture};
use modelsplit_e2e::local_gateway::modelsplit_binary;
use modelsplit_e2e::standin::StandInConfig;
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::requests_counter_name;
use serde_json::Value;

const NS: &str = "modelmesh-apps";
const PATH: &str = "/modelmesh/modelmesh-apps/v2/models/ai-model/infer";

async fn fixture(one: u32, two: u32) -> Fixture {
    let config = FilterConfig::with_groups(vec![group(
        NS,
        "ai-model",
        &[("ai-model-one", one), ("ai-model-two", two)],
    )]);
    Fixture::serving(&config, NS, &["ai-model-one", "ai-model-two"]).await
}

/// `n` group requests that the override header sends to `member`.
async fn send(fx: &Fixture, member: &'static str, n: usize) {
    let observed = fx
        .rest_many(n, "POST", PATH, move |_| {
            vec![("x-modelsplit-member".to_string(), member.to_string())]
        })
        .await;
    assert!(observed.iter().all(|o| o.status == 200), "{observed:?}");
}

/// Waits until the filter's counters show `one` and `two` requests.
async fn wait_counted(fx: &Fixture, one: u64, two: u64) {
    let names = [
        (requests_counter_name(NS, "ai-model", "ai-model-one"), one),
        (requests_counter_name(NS, "ai-model", "ai-model-two"), two),
    ];
    let stats = fx
        .gateway
        .stats_when("modelsplit", |s| names.iter().all(|(n, v)| s.get(n) == *v))
        .await
        .expect("stats");
    for (name, value) in &names {
        assert_eq!(stats.get(name), *value, "{name}");
    }
}

fn status(fx: &Fixture, args: &[&str]) -> Output {
    Command::new(modelsplit_binary())
        .arg("status")
        .arg(format!("--admin=http://{}", fx.gateway.admin))
        .args(args)
        .output()
        .expect("modelsplit status runs")
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

/// (member, weight %, observed %, requests, total) of the one group.
fn rows(status: &Value) -> Vec<(String, f64, Option<f64>, u64, u64)> {
    assert_eq!(status.as_array().map(Vec::len), Some(1), "{status:#}");
    let group = &status[0];
    assert_eq!(group["namespace"], NS);
    assert_eq!(group["group"], "ai-model");
    group["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["member"].as_str().unwrap().to_string(),
                m["weight_percent"].as_f64().unwrap(),
                m["observed_percent"].as_f64(),
                m["requests"].as_u64().unwrap(),
                m["total"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_weights_observed_shares_and_drift() {
    let fx = fixture(80, 20).await;
    send(&fx, "ai-model-one", 800).await;
    send(&fx, "ai-model-two", 200).await;
    wait_counted(&fx, 800, 200).await;

    // Since start: 800/200 against 80/20 is exactly in line.
    let since_start = json(&status(&fx, &["--window=0", "-o", "json"]));
    assert_eq!(
        rows(&since_start),
        vec![
            ("ai-model-one".into(), 80.0, Some(80.0), 800, 800),
            ("ai-model-two".into(), 20.0, Some(20.0), 200, 200),
        ]
    );
    assert_eq!(since_start[0]["requests"], 1000);
    assert_eq!(
        since_start[0]["drift"]["verdict"], "in-line",
        "{since_start:#}"
    );

    // The table, as people read it.
    let table = status(&fx, &["--window=0"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.starts_with(
            "modelmesh-apps/ai-model: 1000 requests since the gateway started: in line"
        ),
        "{text}"
    );
    assert!(text.contains("ai-model-one"), "{text}");
    assert!(
        !text.contains('\x1b'),
        "no colour when not a terminal: {text}"
    );

    // Re-weighted to 50/50: the same traffic is now out of line with the weights.
    let config = FilterConfig::with_groups(vec![group(
        NS,
        "ai-model",
        &[("ai-model-one", 50), ("ai-model-two", 50)],
    )]);
    fx.gateway
        .apply_filter_config(&config)
        .await
        .expect("push 50/50");
    let drifted = json(&status(&fx, &["--window=0", "-o", "json"]));
    assert_eq!(rows(&drifted)[0].1, 50.0);
    assert_eq!(drifted[0]["drift"]["verdict"], "drift", "{drifted:#}");
    let table = status(&fx, &["--window=0"]);
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(": DRIFT (chi-square 360.00 > 10.83"),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_counts_only_the_requests_inside_it() {
    let fx = fixture(50, 50).await;
    send(&fx, "ai-model-one", 100).await;
    wait_counted(&fx, 100, 0).await;

    // A quiet window: nothing to judge.
    let quiet = json(&status(&fx, &["--window=1", "-o", "json"]));
    assert_eq!(quiet[0]["requests"], 0);
    assert_eq!(quiet[0]["drift"]["verdict"], "too-few-requests");
    assert_eq!(rows(&quiet)[0].2, None);

    // Requests sent during a window are the window's (the totals keep the earlier ones).
    let binary = modelsplit_binary();
    let admin = format!("--admin=http://{}", fx.gateway.admin);
    let window = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["status", &admin, "--window=4", "-o", "json"])
            .output()
            .expect("modelsplit status runs")
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&fx, "ai-model-one", 300).await;
    send(&fx, "ai-model-two", 300).await;
    let during = json(&window.await.expect("status task"));
    assert_eq!(
        rows(&during),
        vec![
            ("ai-model-one".into(), 50.0, Some(50.0), 300, 400),
            ("ai-model-two".into(), 50.0, Some(50.0), 300, 300),
        ],
        "{during:#}"
    );
    let per_second = during[0]["members"][0]["per_second"].as_f64().unwrap();
    assert!((per_second - 75.0).abs() < 1e-9, "{during:#}");
}

#[test]
fn an_unreachable_admin_says_how_to_reach_a_gateway() {
    let output = Command::new(modelsplit_binary())
        .args(["status", "--admin=http://127.0.0.1:1", "--window=0"])
        .output()
        .expect("modelsplit status runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot read Envoy's admin API at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("port-forward"), "{stderr}");
}

/// Polls `status -o json` (since start) until `member` shows `responses` answers: Envoy
/// counts a route's responses when the response ends.
async fn outcome_when(fx: &Fixture, member: &str, responses: u64) -> Value {
    for _ in 0..100 {
        let status = json(&status(fx, &["--window=0", "-o", "json"]));
        let row = status[0]["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["member"] == member))
            .cloned()
            .unwrap_or_default();
        if row["outcome"]["responses"].as_u64() == Some(responses) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{member} never showed {responses} responses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_how_each_member_answered() {
    // The canary fails every 4th request it gets: REST 503, gRPC UNAVAILABLE.
    let config = FilterConfig::with_groups(vec![group(
        NS,
        "ai-model",
        &[("ai-model-one", 80), ("ai-model-two", 20)],
    )]);
    let members = ["ai-model-one", "ai-model-two"];
    let standin = StandInConfig::only(NS, &members).failing_every("ai-model-two", 4);
    let fx = Fixture::start(&config, &exposed(NS, &members), vec![standin]).await;

    let to = |member: &'static str| {
        move |_| vec![("x-modelsplit-member".to_string(), member.to_string())]
    };
    let one = fx.rest_many(200, "POST", PATH, to("ai-model-one")).await;
    let two = fx.rest_many(100, "POST", PATH, to("ai-model-two")).await;
    assert!(one.iter().all(|o| o.status == 200));
    let failed = two.iter().filter(|o| o.status == 503).count();
    assert_eq!(failed, 25, "the stand-in fails every 4th");
    assert_eq!(two.iter().filter(|o| o.status == 200).count(), 75);

    // gRPC calls 101-140 of the canary: 10 answered UNAVAILABLE (over HTTP 200).
    let grpc = fx.grpc_many(40, "ai-model", to("ai-model-two")).await;
    assert_eq!(grpc.iter().filter(|o| o.status == 14).count(), 10);
    assert_eq!(grpc.iter().filter(|o| o.status == 0).count(), 30);

    outcome_when(&fx, "ai-model-one", 200).await;
    let mut shown = outcome_when(&fx, "ai-model-two", 140).await;
    for _ in 0..50 {
        // The filter's gRPC error counts reach /stats on its next flush (at most 1 s).
        if shown[0]["members"][1]["outcome"]["grpc_errors"] == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        shown = json(&status(&fx, &["--window=0", "-o", "json"]));
    }
    let members = shown[0]["members"].as_array().unwrap();
    let (stable, canary) = (&members[0]["outcome"], &members[1]["outcome"]);
    assert_eq!(stable["server_errors"], 0, "{shown:#}");
    assert_eq!(stable["grpc_errors"], 0, "{shown:#}");
    assert_eq!(stable["error_percent"], 0.0);
    assert_eq!(canary["server_errors"], 25, "{shown:#}");
    assert_eq!(canary["grpc_errors"], 10, "{shown:#}");
    assert_eq!(canary["error_percent"], 25.0, "35 of 140");

    // Latency comes from Envoy's histograms, merged for the admin API once a second.
    let mut latency = Value::Null;
    for _ in 0..50 {
        let shown = json(&status(&fx, &["--window=0", "-o", "json"]));
        latency = shown[0]["members"][1]["outcome"].clone();
        if latency["p99_ms"].is_number() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50, p99) = (latency["p50_ms"].as_f64(), latency["p99_ms"].as_f64());
    assert!(
        matches!((p50, p99), (Some(a), Some(b)) if a > 0.0 && a <= b && b <= 60_000.0),
        "{latency:#}"
    );

    // The table: the error share and the latencies beside the shares.
    let table = status(&fx, &["--window=0"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("ERRORS"), "{text}");
    let canary_row = text
        .lines()
        .find(|l| l.trim_start().starts_with("ai-model-two"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(canary_row.contains(" 25.0% "), "{canary_row:?}");
}
