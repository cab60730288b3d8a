//! `modelsplit run` on a real control plane — kube-apiserver, etcd and istiod built from
//! their Go modules — installed from controller/deploy/ and running as its ServiceAccount,
//! with an Envoy gateway configured by istiod: the user's workflow from label to split.
//!
//! Run alone with `scripts/test-cluster.sh`.

use std::time::{Duration, Instant};

use modelsplit_e2e::cluster::istio::GatewayMark;
use modelsplit_e2e::cluster::{group_yaml, Cluster};
use modelsplit_e2e::infer::vmodel_request;
use modelsplit_e2e::split::check_split;

const NS: &str = "modelmesh-apps";
const MODELS: &[&str] = &["ai-model-one", "ai-model-two"];
const IN_FORCE: Duration = Duration::from_secs(60);

fn seed(cluster: &Cluster) {
    cluster.admin.apply(&group_yaml(
        NS,
        "ai-model",
        &[("ai-model-one", "80"), ("ai-model-two", "20")],
    ));
}

/// Waits until the gateway runs ai-model at `one`/`two` percent on every worker, with
/// `since` taken before the change; returns how long it took.
async fn wait_split(cluster: &Cluster, one: u64, two: u64, since: &GatewayMark) -> Duration {
    cluster
        .wait_in_force(
            NS,
            "ai-model",
            &[("ai-model-one", one * 100), ("ai-model-two", two * 100)],
            since,
            IN_FORCE,
        )
        .await
}

/// Sends `total` requests to ai-model (REST, or gRPC by `mm-vmodel-id`) and asserts every
/// answer came from a member and the counts fit `one`/`two` percent.
async fn assert_split(cluster: &Cluster, grpc: bool, total: usize, one: u32, two: u32) {
    let tally = if grpc {
        cluster
            .grpc_tally(NS, vmodel_request("ai-model"), total)
            .await
    } else {
        cluster.rest_tally(NS, "ai-model", total).await
    };
    let protocol = if grpc { "gRPC" } else { "REST" };
    assert_eq!(
        tally.problem_count, 0,
        "{protocol} problems: {:?}",
        tally.problems
    );
    let check = check_split(
        &tally.by_member,
        &[("ai-model-one", one), ("ai-model-two", two)],
    );
    eprintln!("{protocol} {one}/{two} through istiod's gateway:\n{check}");
    assert!(check.passes(), "{check}");
}

/// `modelsplit status` on istiod's gateway (its admin port, as `kubectl port-forward` gives
/// it): the group with its configured 80/20 and the requests just sent, counted by member.
async fn assert_status_shows_the_split(cluster: &Cluster) {
    // Counters reach Envoy's stats on the filter's tick (at most 1 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = cluster.gateway_status();
    let group = status
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["namespace"] == NS && g["group"] == "ai-model")
        .unwrap_or_else(|| panic!("no {NS}/ai-model in {status:#}"));
    let members = group["members"].as_array().expect("members");
    let weights: Vec<f64> = members
        .iter()
        .map(|m| m["weight_percent"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, [80.0, 20.0], "{group:#}");
    // 2,000 REST and 2,000 gRPC calls were split just now (and a few probes before).
    let total: u64 = members.iter().map(|m| m["total"].as_u64().unwrap()).sum();
    assert!(total >= 4000, "{group:#}");
    eprintln!("modelsplit status on istiod's gateway: {group}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_labelled_group_splits_rest_and_grpc_and_follows_annotations() {
    let cluster = Cluster::start(&[(NS, MODELS)]).await;
    let mut controller = cluster.controller("replica-a", &[]);
    controller.wait_ready().await;

    let labelled = Instant::now();
    let mark = cluster.gateway.mark().await;
    seed(&cluster);
    wait_split(&cluster, 80, 20, &mark).await;
    eprintln!(
        "FIGURE labelled group -> in force at the gateway: {:?}",
        labelled.elapsed()
    );

    assert_split(&cluster, false, 2000, 80, 20).await;

    assert_split(&cluster, true, 2000, 80, 20).await;
    assert_status_shows_the_split(&cluster).await;

    let ready = cluster
        .wait_event(NS, "GroupReady", "InferenceService/ai-model-one", IN_FORCE)
        .await;
    assert_eq!(ready.type_, "Normal");
    assert!(ready.message.contains("ai-model-one=80%"), "{ready:?}");
    assert_eq!(ready.reporting_controller, "modelsplit");

    // Re-weight as people do: one annotation at a time (the sum passes through 70).
    let edited = Instant::now();
    let mark = cluster.gateway.mark().await;
    cluster.annotate_weight(NS, "ai-model-one", "50");
    cluster.annotate_weight(NS, "ai-model-two", "50");
    wait_split(&cluster, 50, 50, &mark).await;
    eprintln!(
        "FIGURE re-annotation 80/20 -> 50/50 in force at the gateway: {:?}",
        edited.elapsed()
    );
    assert_split(&cluster, false, 2000, 50, 50).await;

    // An invalid edit (sum 120) keeps the last good split serving, and says why. (The
    // re-weight above may have said so too, for its in-between sum of 70: edits made one
    // at a time can be planned apart.)
    let mark = cluster.gateway.mark().await;
    cluster.annotate_weight(NS, "ai-model-one", "70");
    let stale = cluster
        .wait_event_saying(
            NS,
            "GroupStale",
            "InferenceService/ai-model-one",
            "120",
            IN_FORCE,
        )
        .await;
    assert_eq!(stale.type_, "Warning");
    wait_split(&cluster, 50, 50, &mark).await;
    // The last good split keeps serving.
    assert_split(&cluster, false, 2000, 50, 50).await;

    // Metrics as Prometheus scrapes them.
    let metrics = controller.metrics().await;
    assert!(metrics.contains("modelsplit_leader 1"), "{metrics}");
    assert!(
        metrics.contains("modelsplit_groups{state=\"stale\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("modelsplit_writes_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_side_apply_keeps_what_people_add_restores_what_it_owns_and_idles_quietly() {
    let cluster = Cluster::start(&[(NS, MODELS)]).await;
    let mut controller = cluster.controller("replica-a", &["--resync-seconds=2"]);
    controller.wait_ready().await;
    let mark = cluster.gateway.mark().await;
    seed(&cluster);
    wait_split(&cluster, 80, 20, &mark).await;
    // Let the first passes settle (the controller's own writes come back as watch events):
    // two passes that started after the split was in force.
    controller.wait_for_passes(2.0).await;

    // A person adds a label and an annotation, and changes a field the controller owns.
    let admin = &cluster.admin;
    admin.run(&["label", "-n", NS, "virtualservice", "modelsplit", "team=ml"]);
    admin.run(&[
        "annotate",
        "-n",
        "istio-system",
        "wasmplugin",
        "modelsplit",
        "owner=ml-platform",
    ]);
    admin.run(&[
        "patch",
        "-n",
        NS,
        "virtualservice",
        "modelsplit",
        "--type=merge",
        "-p",
        r#"{"spec":{"hosts":["example.com"]}}"#,
    ]);
    let deadline = Instant::now() + IN_FORCE;
    loop {
        let vs = admin.get_json(&["-n", NS, "virtualservice", "modelsplit"]);
        if vs["spec"]["hosts"] == serde_json::json!(["*"]) {
            assert_eq!(
                vs["metadata"]["labels"]["team"], "ml",
                "a person's label survives"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not restore spec.hosts: {vs}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let plugin = admin.get_json(&["-n", "istio-system", "wasmplugin", "modelsplit"]);
    assert_eq!(plugin["metadata"]["annotations"]["owner"], "ml-platform");

    // Idle: once a pass has seen the restored state, resyncs every 2 s re-plan
    // everything and write nothing (judged over passes, not over a fixed time).
    controller.wait_for_passes(1.0).await;
    let before = cluster.api.audit().len();
    let passes_before = controller.passes().await;
    controller.wait_for_passes(2.0).await;
    let passes_after = controller.passes().await;
    eprintln!("idle: reconcile passes {passes_before} -> {passes_after}");
    let writes: Vec<_> = cluster.api.audit()[before..]
        .iter()
        .filter(|e| e.by_replica("replica-a") && e.resource != "leases")
        .cloned()
        .collect();
    assert!(writes.is_empty(), "an idle controller wrote: {writes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_hand_over_the_lease_with_exactly_one_writer() {
    let cluster = Cluster::start(&[(NS, MODELS)]).await;
    let mut first = cluster.controller("replica-a", &[]);
    first.wait_ready().await;
    let mut second = cluster.controller("replica-b", &[]);
    second.wait_ready().await;
    let mark = cluster.gateway.mark().await;
    seed(&cluster);
    wait_split(&cluster, 80, 20, &mark).await;
    first.wait_leader(true, IN_FORCE).await;
    second.wait_leader(false, IN_FORCE).await;

    // SIGTERM (a rolling update): the leader releases the Lease; the standby takes over at once.
    first.process().signal("TERM");
    assert!(
        first.process().wait_exit(IN_FORCE),
        "replica-a did not stop on SIGTERM"
    );
    let stopped = Instant::now();
    let mark = cluster.gateway.mark().await;
    cluster.annotate_weight(NS, "ai-model-one", "60");
    cluster.annotate_weight(NS, "ai-model-two", "40");
    wait_split(&cluster, 60, 40, &mark).await;
    eprintln!(
        "FIGURE SIGTERM of the leader -> edit in force by the standby: {:?}",
        stopped.elapsed()
    );
    second.wait_leader(true, IN_FORCE).await;

    // A killed leader (no release): a third replica takes over once the Lease expires.
    let mut third = cluster.controller("replica-c", &[]);
    third.wait_ready().await;
    second.process().kill();
    let killed = Instant::now();
    let mark = cluster.gateway.mark().await;
    cluster.annotate_weight(NS, "ai-model-one", "30");
    cluster.annotate_weight(NS, "ai-model-two", "70");
    wait_split(&cluster, 30, 70, &mark).await;
    eprintln!(
        "FIGURE SIGKILL of the leader -> edit in force by the next: {:?}",
        killed.elapsed()
    );

    // Exactly one writer at a time, from the API server's own record: every routing write
    // of a replica falls inside the time it held the Lease.
    let audit = cluster.api.audit();
    let routing = |id: &str| -> Vec<String> {
        audit
            .iter()
            .filter(|e| e.by_replica(id) && e.is_routing_write())
            .map(|e| e.received.clone())
            .collect()
    };
    let (a, b, c) = (
        routing("replica-a"),
        routing("replica-b"),
        routing("replica-c"),
    );
    assert!(
        !a.is_empty() && !b.is_empty() && !c.is_empty(),
        "each leader wrote: {a:?} {b:?} {c:?}"
    );
    assert!(
        a.iter().max() < b.iter().min(),
        "replica-b wrote while replica-a led: {a:?} {b:?}"
    );
    assert!(
        b.iter().max() < c.iter().min(),
        "replica-c wrote while replica-b led: {b:?} {c:?}"
    );
    let events = cluster.events(NS);
    assert!(
        events.iter().any(|e| e.reason == "GroupReady"),
        "{events:#?}"
    );
}
