//! The controller at scale on the real control plane (issue 18): N InferenceServices in
//! 2-member groups over N/50 namespaces. Ignored by default; run by
//! `scripts/bench.sh cluster-scale` (N from `MODELSPLIT_SCALE_N`, default 1000), which
//! writes the FIGURE lines into BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelsplit_e2e::cluster::{group_weights, isvc_yaml, Cluster};

const EDITS: usize = 20;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64) * p).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}

/// Every `(namespace, group) -> weights` the gateway runs now.
async fn routed(cluster: &Cluster) -> Vec<serde_json::Value> {
    cluster
        .gateway
        .filter_configs()
        .await
        .into_iter()
        .map(|(_, config)| config)
        .collect()
}

fn member(group: usize, n: usize) -> String {
    format!("g{group}-m{n}")
}

/// A `/proc/<pid>/status` memory field (`VmHWM`, `VmRSS`) in MiB.
fn memory_mib(pid: Option<u32>, field: &str) -> f64 {
    let kib: u64 = pid
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    kib as f64 / 1024.0
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

const PUBLISHED_AT: &str = "modelsplit_filter_config_published_timestamp_seconds";

/// Annotates group `g` of `namespace` to `one`/`100 - one`, as a person does (two edits).
fn edit(cluster: &Cluster, namespace: &str, g: usize, one: u64) {
    cluster.annotate_weight(namespace, &member(g, 1), &one.to_string());
    cluster.annotate_weight(namespace, &member(g, 2), &(100 - one).to_string());
}

fn wanted(g: usize, one: u64) -> BTreeMap<String, u64> {
    BTreeMap::from([(member(g, 1), one * 100), (member(g, 2), (100 - one) * 100)])
}

/// An edit waited for: namespace, group index, member one's new weight, when it was made.
type PendingEdit = (String, usize, u64, Instant);

/// Moves the edits of `pending` that `configs` (the gateway's filter configs) run into
/// `in_force`, as the time each took.
fn take_in_force(
    configs: &[serde_json::Value],
    pending: &mut Vec<PendingEdit>,
    in_force: &mut Vec<Duration>,
) {
    pending.retain(|(namespace, g, one, at)| {
        let found = configs
            .iter()
            .filter_map(|c| group_weights(c, namespace, &format!("group-{g}")))
            .any(|w| w == wanted(*g, *one));
        if found {
            in_force.push(at.elapsed());
        }
        !found
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: scripts/bench.sh cluster-scale"]
async fn scale() {
    let n: usize = std::env::var("MODELSPLIT_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let namespaces: Vec<String> = (0..n.div_ceil(50)).map(|i| format!("scale-{i}")).collect();
    let groups_per_ns = 25;
    let models: Vec<Vec<String>> = namespaces
        .iter()
        .map(|_| {
            (0..groups_per_ns)
                .flat_map(|g| [member(g, 1), member(g, 2)])
                .collect()
        })
        .collect();
    let models_ref: Vec<Vec<&str>> = models
        .iter()
        .map(|m| m.iter().map(String::as_str).collect())
        .collect();
    let spec: Vec<(&str, &[&str])> = namespaces
        .iter()
        .zip(&models_ref)
        .map(|(ns, m)| (ns.as_str(), m.as_slice()))
        .collect();
    let cluster = Cluster::start(&spec).await;
    let created = Instant::now();
    for namespace in &namespaces {
        let mut yaml = String::new();
        for g in 0..groups_per_ns {
            for m in 1..=2 {
                yaml.push_str(&isvc_yaml(
                    namespace,
                    &member(g, m),
                    Some(&format!("group-{g}")),
                    Some("50"),
                ));
            }
        }
        cluster.admin.apply(&yaml);
    }
    eprintln!(
        "FIGURE isvcs created: {} in {:.1}s",
        namespaces.len() * groups_per_ns * 2,
        created.elapsed().as_secs_f64()
    );
    let groups = namespaces.len() * groups_per_ns;

    // Start -> every group routed at the gateway, with 20 edits made during the start-up burst.
    let started = Instant::now();
    let started_unix = unix_now();
    let mut controller = cluster.controller("replica-a", &[]);
    controller.wait_ready().await;
    let listed = started.elapsed();
    let pid = controller.process().pid();
    let rss_listed = memory_mib(pid, "VmRSS:");
    let mut pending: Vec<PendingEdit> = Vec::new();
    for i in 0..EDITS {
        let namespace = &namespaces[i % namespaces.len()];
        let g = i / namespaces.len() % groups_per_ns;
        let at = Instant::now();
        edit(&cluster, namespace, g, 70);
        pending.push((namespace.clone(), g, 70, at));
    }
    let mut during_start = Vec::new();
    let mut all_routed = None;
    let mut first_published = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while all_routed.is_none() || !pending.is_empty() {
        assert!(Instant::now() < deadline, "not routed within 10 min");
        let configs = routed(&cluster).await;
        take_in_force(&configs, &mut pending, &mut during_start);
        if first_published.is_none() {
            let at = controller.metric(PUBLISHED_AT).await;
            if at > 0.0 {
                first_published = Some(at - started_unix);
            }
        }
        if all_routed.is_none() {
            let count: usize = configs
                .iter()
                .filter_map(|c| c.get("groups").and_then(|g| g.as_array()).map(Vec::len))
                .sum();
            if count >= groups {
                all_routed = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_routed = all_routed.unwrap_or_default();
    let rss_routed = memory_mib(pid, "VmRSS:");

    // Idle: one edit at a time, each waited for at the gateway.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut idle = Vec::new();
    let mut idle_ours = Vec::new();
    for i in 0..EDITS {
        let namespace = &namespaces[(i + 1) % namespaces.len()];
        let g = groups_per_ns - 1 - i / namespaces.len() % groups_per_ns;
        let one = 30 + (i as u64 % 5) * 10;
        let at = Instant::now();
        let at_unix = unix_now();
        edit(&cluster, namespace, g, one);
        let weights: Vec<(String, u64)> = wanted(g, one).into_iter().collect();
        let refs: Vec<(&str, u64)> = weights.iter().map(|(m, w)| (m.as_str(), *w)).collect();
        cluster
            .wait_filter_weights(
                namespace,
                &format!("group-{g}"),
                &refs,
                Duration::from_secs(120),
            )
            .await;
        idle.push(at.elapsed());
        // The last filter-config write is this edit's (edits are one at a time).
        let published = controller.metric(PUBLISHED_AT).await - at_unix;
        idle_ours.push(Duration::from_secs_f64(published.max(0.0)));
    }

    let created_events = controller
        .metric("modelsplit_events_total{result=\"created\"}")
        .await;
    let passes = controller
        .metric("modelsplit_reconciles_total{result=\"ok\"}")
        .await
        + controller
            .metric("modelsplit_reconciles_total{result=\"error\"}")
            .await;
    // Where a pass's time goes: the controller's line for each pass that changed a filter config.
    for line in controller
        .log()
        .lines()
        .filter(|l| l.contains("published"))
        .take(5)
    {
        eprintln!("pass: {line}");
    }
    let peak = memory_mib(pid, "VmHWM:");
    let rss_end = memory_mib(pid, "VmRSS:");

    // A restart (an upgrade, a rescheduled pod): everything is published already, and edits
    // made while the new controller starts wait for its first pass only.
    controller.process().signal("TERM");
    assert!(controller.process().wait_exit(Duration::from_secs(30)));
    let mut restarted = cluster.controller("replica-b", &[]);
    let mut pending: Vec<PendingEdit> = Vec::new();
    for i in 0..EDITS {
        let namespace = &namespaces[(i + 2) % namespaces.len()];
        let g = (i / namespaces.len() + 5) % groups_per_ns;
        let at = Instant::now();
        edit(&cluster, namespace, g, 60);
        pending.push((namespace.clone(), g, 60, at));
    }
    restarted.wait_ready().await;
    let mut after_restart = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !pending.is_empty() {
        assert!(
            Instant::now() < deadline,
            "restart edits not in force within 5 min"
        );
        let configs = routed(&cluster).await;
        take_in_force(&configs, &mut pending, &mut after_restart);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A restart lists every published object at once: its own peak, not the first one's.
    let restarted_peak = memory_mib(restarted.process().pid(), "VmHWM:");

    eprintln!(
        "FIGURE n={n} groups={groups} namespaces={}",
        namespaces.len()
    );
    eprintln!(
        "FIGURE start -> every group routed at the gateway: {:.1}s",
        all_routed.as_secs_f64()
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "FIGURE of which ours: start -> watches listed {:.1}s, -> first filter config written {:.1}s",
        listed.as_secs_f64(),
        first_published.unwrap_or_default()
    );
    eprintln!(
        "FIGURE annotation -> in force, during start-up (n={}): p50 {:.0} ms, p99 {:.0} ms",
        during_start.len(),
        ms(percentile(&mut during_start, 0.5)),
        ms(percentile(&mut during_start, 0.99))
    );
    eprintln!(
        "FIGURE annotation -> in force, made while a restarted controller starts (n={}): p50 {:.0} ms, p99 {:.0} ms",
        after_restart.len(),
        ms(percentile(&mut after_restart, 0.5)),
        ms(percentile(&mut after_restart, 0.99))
    );
    eprintln!(
        "FIGURE annotation -> in force, idle (n={}): p50 {:.0} ms, p99 {:.0} ms",
        idle.len(),
        ms(percentile(&mut idle, 0.5)),
        ms(percentile(&mut idle, 0.99))
    );
    eprintln!(
        "FIGURE of which ours (annotation -> filter config written at the API server), idle: p50 {:.0} ms, p99 {:.0} ms",
        ms(percentile(&mut idle_ours, 0.5)),
        ms(percentile(&mut idle_ours, 0.99))
    );
    eprintln!(
        "FIGURE Events created {created_events}, passes {passes}, Events per pass {:.1}",
        created_events / passes.max(1.0)
    );
    eprintln!(
        "FIGURE controller peak RSS (VmHWM): {peak:.1} MiB; RSS when listed {rss_listed:.1}, when routed {rss_routed:.1}, at the end {rss_end:.1} MiB; restarted controller's peak {restarted_peak:.1} MiB"
    );
}
