//! Leader election on a coordination.k8s.io/v1 Lease against a mock API server:
//! acquire, renew, stand by, take over an expired lease, lose it, and release it.

mod cluster_mock;

use std::time::Duration;

use cluster_mock::*;
use k8s_openapi::jiff::Timestamp;
use modelsplit_controller::cluster::lease::{
    keep_leading, LeaderElector, Leadership, LeaseSettings,
};
use serde_json::{json, Value};
use tokio::time::Instant;

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/modelsplit-system/leases/modelsplit-controller";
const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/modelsplit-system/leases";

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings::new("modelsplit-controller", "modelsplit-system", identity)
}

fn wall(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

fn time(seconds: i64) -> String {
    // MicroTime: RFC 3339 with microseconds.
    wall(seconds).strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn lease(holder: Option<&str>, renewed: i64, transitions: i32, resource_version: &str) -> Value {
    let mut spec = json!({
        "leaseDurationSeconds": 15,
        "acquireTime": time(0),
        "renewTime": time(renewed),
        "leaseTransitions": transitions
    });
    if let Some(holder) = holder {
        spec["holderIdentity"] = json!(holder);
    }
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "modelsplit-controller", "namespace": "modelsplit-system", "resourceVersion": resource_version},
        "spec": spec
    })
}

fn not_found() -> Value {
    status(
        404,
        "NotFound",
        "leases.coordination.k8s.io \"modelsplit-controller\" not found",
    )
}

#[tokio::test]
async fn creates_the_lease_when_there_is_none() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-a"));
    let now = Instant::now();
    let round = tokio::spawn(async move { elector.try_acquire_or_renew(now, wall(0)).await });

    expect(&mut api, "GET", LEASE_PATH, 404, &not_found()).await;
    let created = lease(Some("pod-a"), 0, 0, "1");
    let seen = expect(&mut api, "POST", LEASES_PATH, 201, &created).await;
    assert_eq!(
        seen.body,
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "modelsplit-controller", "namespace": "modelsplit-system"},
            "spec": {
                "holderIdentity": "pod-a", "leaseDurationSeconds": 15,
                "acquireTime": time(0), "renewTime": time(0), "leaseTransitions": 0
            }
        })
    );
    assert!(round.await.unwrap().unwrap(), "the creator leads");
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn losing_the_create_race_means_standing_by() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-b"));
    let now = Instant::now();
    let round = tokio::spawn(async move { elector.try_acquire_or_renew(now, wall(0)).await });
    expect(&mut api, "GET", LEASE_PATH, 404, &not_found()).await;
    expect(
        &mut api,
        "POST",
        LEASES_PATH,
        409,
        &status(409, "AlreadyExists", "already exists"),
    )
    .await;
    assert!(!round.await.unwrap().unwrap());
}

#[tokio::test]
async fn the_holder_renews_with_a_compare_and_swap() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-a"));
    let now = Instant::now();
    let round = tokio::spawn(async move { elector.try_acquire_or_renew(now, wall(2)).await });

    expect(
        &mut api,
        "GET",
        LEASE_PATH,
        200,
        &lease(Some("pod-a"), 0, 3, "41"),
    )
    .await;
    let renewed = lease(Some("pod-a"), 2, 3, "42");
    let seen = expect(&mut api, "PUT", LEASE_PATH, 200, &renewed).await;
    // resourceVersion 41 makes the PUT fail if anyone wrote in between; acquireTime and
    // leaseTransitions stay: this is a renewal, not a new term.
    assert_eq!(seen.body, lease(Some("pod-a"), 2, 3, "41"));
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_fresh_lease_of_another_replica_is_respected_until_it_expires() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-b"));
    let start = Instant::now();
    let held = lease(Some("pod-a"), 0, 0, "41");

    // First sight, and 14 s later with no renewal seen: still pod-a's.
    for (after, at) in [(0, 0), (14, 14)] {
        let now = start + Duration::from_secs(after);
        let round = tokio::spawn(async move {
            let result = elector.try_acquire_or_renew(now, wall(at)).await;
            (elector, result)
        });
        expect(&mut api, "GET", LEASE_PATH, 200, &held).await;
        let (returned, result) = round.await.unwrap();
        elector = returned;
        assert!(!result.unwrap(), "{after} s after the last renewal seen");
        assert_no_more_requests(&mut api).await;
    }

    // 16 s without a renewal (lease 15 s): pod-b takes over, a new term.
    let now = start + Duration::from_secs(16);
    let round = tokio::spawn(async move { elector.try_acquire_or_renew(now, wall(16)).await });
    expect(&mut api, "GET", LEASE_PATH, 200, &held).await;
    let mut taken = lease(Some("pod-b"), 16, 1, "41");
    taken["spec"]["acquireTime"] = json!(time(16));
    let seen = expect(&mut api, "PUT", LEASE_PATH, 200, &taken).await;
    assert_eq!(seen.body, taken);
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test]
async fn a_renewal_seen_resets_the_expiry_clock() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-b"));
    let start = Instant::now();
    for (after, renewed) in [(0, 0), (10, 10), (20, 20)] {
        let now = start + Duration::from_secs(after);
        let round = tokio::spawn(async move {
            let result = elector.try_acquire_or_renew(now, wall(after as i64)).await;
            (elector, result)
        });
        // pod-a keeps renewing: at 20 s the last renewal was seen at 20 s, not 0 s.
        expect(
            &mut api,
            "GET",
            LEASE_PATH,
            200,
            &lease(Some("pod-a"), renewed, 0, "41"),
        )
        .await;
        let (returned, result) = round.await.unwrap();
        elector = returned;
        assert!(!result.unwrap());
    }
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let (client, mut api) = mock_client();
    let mut elector = LeaderElector::new(client, settings("pod-b"));
    let now = Instant::now();
    let round = tokio::spawn(async move { elector.try_acquire_or_renew(now, wall(5)).await });
    let mut released = lease(None, 4, 2, "50");
    released["spec"]["leaseDurationSeconds"] = json!(1);
    expect(&mut api, "GET", LEASE_PATH, 200, &released).await;
    let mut taken = lease(Some("pod-b"), 5, 3, "50");
    taken["spec"]["acquireTime"] = json!(time(5));
    let seen = expect(&mut api, "PUT", LEASE_PATH, 200, &taken).await;
    assert_eq!(seen.body, taken);
    assert!(round.await.unwrap().unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_loses_the_lease_stops_writing_and_releases_on_shutdown() {
    let (client, mut api) = mock_client();
    let elector = LeaderElector::new(client, settings("pod-a"));
    let leadership = Leadership::new();
    let mut changes = leadership.subscribe();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(keep_leading(elector, leadership.clone(), shutdown, |_| {}));

    // Round 1: acquire.
    expect(&mut api, "GET", LEASE_PATH, 404, &not_found()).await;
    expect(
        &mut api,
        "POST",
        LEASES_PATH,
        201,
        &lease(Some("pod-a"), 0, 0, "1"),
    )
    .await;
    changes.changed().await.unwrap();
    assert!(leadership.is_leading());

    // Round 2 (2 s later): renewal answered 409, someone else wrote the Lease.
    expect(
        &mut api,
        "GET",
        LEASE_PATH,
        200,
        &lease(Some("pod-a"), 0, 0, "1"),
    )
    .await;
    expect(
        &mut api,
        "PUT",
        LEASE_PATH,
        409,
        &status(409, "Conflict", "the object has been modified"),
    )
    .await;
    changes.changed().await.unwrap();
    assert!(
        !leadership.is_leading(),
        "a replica that lost the lease must not write"
    );

    // Round 3: pod-b holds it now; pod-a stands by and sends no PUT.
    expect(
        &mut api,
        "GET",
        LEASE_PATH,
        200,
        &lease(Some("pod-b"), 2, 1, "2"),
    )
    .await;
    tokio::task::yield_now().await;
    assert!(!leadership.is_leading());

    // Round 4: pod-b released it; pod-a takes over.
    let mut released = lease(None, 4, 1, "3");
    released["spec"]["leaseDurationSeconds"] = json!(1);
    expect(&mut api, "GET", LEASE_PATH, 200, &released).await;
    let (seen, send) = next(&mut api).await;
    assert_eq!((seen.method.as_str(), seen.path()), ("PUT", LEASE_PATH));
    assert_eq!(seen.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(seen.body["spec"]["leaseTransitions"], 2);
    let mut answer = seen.body.clone();
    answer["metadata"]["resourceVersion"] = json!("4");
    reply(send, 200, &answer);
    changes.changed().await.unwrap();
    assert!(leadership.is_leading());

    // SIGTERM: the leader gives the Lease up so the standby need not wait 15 s.
    stop.send(true).unwrap();
    expect(&mut api, "GET", LEASE_PATH, 200, &answer).await;
    let (seen, send) = next(&mut api).await;
    assert_eq!((seen.method.as_str(), seen.path()), ("PUT", LEASE_PATH));
    assert!(
        seen.body["spec"].get("holderIdentity").is_none(),
        "{}",
        seen.body
    );
    assert_eq!(seen.body["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(seen.body["metadata"]["resourceVersion"], "4");
    reply(send, 200, &seen.body);
    task.await.unwrap();
    assert!(!leadership.is_leading());
    assert_no_more_requests(&mut api).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_reach_the_api_server_stops_writing_at_the_renew_deadline() {
    let (client, mut api) = mock_client();
    let elector = LeaderElector::new(client, settings("pod-a"));
    let leadership = Leadership::new();
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(keep_leading(elector, leadership.clone(), shutdown, |_| {}));

    expect(
        &mut api,
        "GET",
        LEASE_PATH,
        200,
        &lease(Some("pod-a"), 0, 0, "1"),
    )
    .await;
    expect(
        &mut api,
        "PUT",
        LEASE_PATH,
        200,
        &lease(Some("pod-a"), 0, 0, "2"),
    )
    .await;
    tokio::task::yield_now().await;
    let acquired = Instant::now();
    assert!(leadership.is_leading());

    // Every renewal fails; leadership ends 10 s (renew deadline) after the last success,
    // before the 15 s after which another replica may take over.
    while acquired.elapsed() < Duration::from_secs(12) {
        expect(
            &mut api,
            "GET",
            LEASE_PATH,
            500,
            &status(500, "InternalError", "etcd unavailable"),
        )
        .await;
        let leading = leadership.is_leading();
        assert_eq!(
            leading,
            acquired.elapsed() < Duration::from_secs(10),
            "at {:?}",
            acquired.elapsed()
        );
    }
    assert!(!leadership.is_leading());
    task.abort();
}
