//! `modelsplit run`'s write path against a mock API server: the exact requests for
//! create, no-op, update and prune, the Events that follow, retries on 409/500, RBAC
//! denials, and a replica that does not lead writing nothing.

mod cluster_mock;

use cluster_mock::*;
use modelsplit_controller::cluster::apply::{ObjectKey, Outcome};
use modelsplit_controller::cluster::kinds::ManagedKind;
use modelsplit_controller::cluster::lease::Leadership;
use modelsplit_controller::cluster::metrics::Metrics;
use modelsplit_controller::cluster::reconcile::{ReconcileOutcome, Reconciler};
use modelsplit_controller::cluster::snapshot::Snapshot;
use modelsplit_controller::cluster::ClusterError;
use modelsplit_controller::Settings;
use serde_json::{json, Value};

const VS_PATH: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/modelmesh-apps/virtualservices/modelsplit";
const WP_PATH: &str =
    "/apis/extensions.istio.io/v1alpha1/namespaces/istio-system/wasmplugins/modelsplit";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/modelmesh-apps/events";
const SEED_LINE: &str = "modelmesh-apps/ai-model: valid: ai-model-one=80% ai-model-two=20%";

fn apply_query() -> Vec<(String, String)> {
    vec![
        ("fieldManager".to_string(), "modelsplit".to_string()),
        ("force".to_string(), "true".to_string()),
    ]
}

fn reconciler(client: kube::Client, leadership: Leadership) -> Reconciler {
    Reconciler::new(
        client,
        Settings::default(),
        leadership,
        Metrics::new(),
        "pod-a".to_string(),
    )
}

type Pass = tokio::task::JoinHandle<(Reconciler, Result<ReconcileOutcome, ClusterError>)>;

/// Runs one reconcile pass in the background while the test plays the API server.
fn start_pass(mut reconciler: Reconciler, snapshot: Snapshot) -> Pass {
    tokio::spawn(async move {
        let result = reconciler.reconcile_once(&snapshot).await;
        (reconciler, result)
    })
}

fn key(kind: ManagedKind, namespace: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: "modelsplit".to_string(),
    }
}

/// Answers a server-side apply of `expected` and checks it is exactly that request.
async fn expect_apply(api: &mut Handle, path: &str, expected: &Value) -> Value {
    let answer = as_observed(expected, "2");
    let seen = expect(api, "PATCH", path, 200, &answer).await;
    assert_eq!(seen.query(), apply_query(), "{}", seen.uri);
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(&seen.body, expected, "apply body of {path}");
    answer
}

/// Answers the Event a member gets and checks its content.
async fn expect_event(api: &mut Handle, member: &str, type_: &str, reason: &str, note: &str) {
    let (seen, send) = next(api).await;
    assert_eq!(
        (seen.method.as_str(), seen.path()),
        ("POST", EVENTS_PATH),
        "{}",
        seen.uri
    );
    let mut event = seen.body.clone();
    let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
    assert!(name.starts_with(&format!("{member}.")), "event name {name}");
    assert!(
        event["eventTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{event}"
    );
    event["metadata"]["name"] = json!("<name>");
    event["eventTime"] = json!("<time>");
    assert_eq!(
        event,
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "<name>", "namespace": "modelmesh-apps"},
            "eventTime": "<time>",
            "action": "Reconcile",
            "reason": reason,
            "note": note,
            "type": type_,
            "reportingController": "modelsplit",
            "reportingInstance": "pod-a",
            "regarding": {
                "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "name": member, "namespace": "modelmesh-apps", "uid": format!("uid-{member}")
            }
        })
    );
    reply(send, 201, &seen.body);
}

#[tokio::test]
async fn creates_the_plan_announces_ready_once_and_then_writes_nothing() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&seed_inputs()),
    );

    // VirtualService first: a member's route exists before the filter sends it traffic.
    let vs = expect_apply(&mut api, VS_PATH, &golden[1]).await;
    let wp = expect_apply(&mut api, WP_PATH, &golden[0]).await;
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    let (reconciler, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
        [
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Created
            ),
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Created
            ),
        ]
    );
    assert_eq!(outcome.events, 2);
    assert_no_more_requests(&mut api).await;

    // The watch now shows what was applied: the same state again is a no-op, with no Event.
    let mut observed = seed_inputs();
    observed.extend([wp, vs]);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert!(
        outcome.writes.iter().all(|(_, o)| *o == Outcome::Unchanged),
        "{:?}",
        outcome.writes
    );
    assert_eq!(outcome.events, 0);
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_restarted_controller_finding_its_objects_in_place_sends_nothing() {
    let (client, mut api) = mock_client();
    let mut observed = seed_inputs();
    for object in seed_golden() {
        let mut object = as_observed(&object, "7");
        // What else a real cluster puts there must not count as a difference.
        object["status"] = json!({"observedGeneration": 1});
        object["metadata"]["labels"]["team"] = json!("ml");
        object["metadata"]["annotations"] = json!({"note": "hand-added"});
        observed.push(object);
    }
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.events, 0,
        "a steady state announces nothing, even after a restart"
    );
    assert_eq!(outcome.writes.len(), 2);
    assert!(outcome.writes.iter().all(|(_, o)| *o == Outcome::Unchanged));
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_changed_split_updates_only_the_wasm_plugin() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let mut stale_plugin = as_observed(&golden[0], "7");
    let members = &mut stale_plugin["spec"]["pluginConfig"]["groups"][0]["members"];
    members[0]["weight"] = json!(7000);
    members[1]["weight"] = json!(3000.0);
    let mut observed = seed_inputs();
    observed.extend([stale_plugin, as_observed(&golden[1], "7")]);

    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    expect_apply(&mut api, WP_PATH, &golden[0]).await;
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    let (_, result) = finish(pass, &mut api).await;
    assert_eq!(
        result.unwrap().writes,
        [
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Unchanged
            ),
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Updated
            ),
        ]
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn objects_no_longer_wanted_are_pruned_and_unlabelled_ones_left_alone() {
    let (client, mut api) = mock_client();
    // The namespace left the mesh: neither its VirtualService nor the WasmPlugin is wanted.
    let mut inputs = seed_inputs();
    for object in &mut inputs {
        if object["kind"] == "Namespace" {
            object["metadata"]["labels"] = json!({});
        }
    }
    let golden = seed_golden();
    let mut observed = inputs.clone();
    observed.extend([as_observed(&golden[0], "7"), as_observed(&golden[1], "7")]);
    let mut foreign = as_observed(&golden[1], "7");
    foreign["metadata"]["name"] = json!("hand-made");
    foreign["metadata"]["labels"] = json!({"app": "other"});
    observed.push(foreign);

    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    let deleted =
        json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}});
    // The filter stops sending to members before their routes go.
    let first = expect(&mut api, "DELETE", WP_PATH, 200, &deleted).await;
    let second = expect(&mut api, "DELETE", VS_PATH, 200, &deleted).await;
    for seen in [&first, &second] {
        assert_eq!(seen.query(), Vec::<(String, String)>::new());
        assert_eq!(seen.body, json!({}), "DeleteOptions");
    }
    // Its group is now outside the mesh: said once, on each member.
    let ignored = "modelmesh-apps/ai-model: ignored: namespace modelmesh-apps is not in the service mesh (label or annotation opendatahub.io/service-mesh=true, and a valid gateway)";
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupIgnored", ignored).await;
    }
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
        [
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Pruned
            ),
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Pruned
            ),
        ]
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_and_server_errors_are_retried_with_backoff_and_nothing_is_lost() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let started = tokio::time::Instant::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&seed_inputs()),
    );

    let conflict = expect(
        &mut api,
        "PATCH",
        VS_PATH,
        409,
        &status(409, "Conflict", "the object has been modified"),
    )
    .await;
    let failed = expect(
        &mut api,
        "PATCH",
        VS_PATH,
        500,
        &status(500, "InternalError", "etcd leader changed"),
    )
    .await;
    expect_apply(&mut api, VS_PATH, &golden[1]).await;
    assert_eq!(conflict.body, golden[1]);
    assert_eq!(failed.body, golden[1]);
    // 0.2 s after the first failure, 0.4 s after the second (virtual time).
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );

    expect_apply(&mut api, WP_PATH, &golden[0]).await;
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    let (_, result) = finish(pass, &mut api).await;
    assert_eq!(result.unwrap().writes.len(), 2);
    assert_no_more_requests(&mut api).await;
}

#[tokio::test(start_paused = true)]
async fn a_write_that_keeps_failing_is_done_on_the_next_pass_and_the_others_go_through() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&seed_inputs()),
    );
    for _ in 0..5 {
        expect(
            &mut api,
            "PATCH",
            VS_PATH,
            503,
            &status(503, "ServiceUnavailable", "try later"),
        )
        .await;
    }
    let wp = expect_apply(&mut api, WP_PATH, &golden[0]).await;
    let (reconciler, result) = finish(pass, &mut api).await;
    let error = result.unwrap_err();
    assert_eq!(error.kind(), "server");
    assert!(
        error
            .to_string()
            .contains("patch VirtualService modelmesh-apps/modelsplit"),
        "{error}"
    );
    // No "ready" while the routes are not published.
    assert_no_more_requests(&mut api).await;

    let mut observed = seed_inputs();
    observed.push(wp);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    expect_apply(&mut api, VS_PATH, &golden[1]).await;
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    let (_, result) = finish(pass, &mut api).await;
    assert_eq!(
        result.unwrap().writes,
        [
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Created
            ),
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Unchanged
            ),
        ]
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn rbac_denying_a_write_stops_the_pass_with_a_clear_error() {
    let (client, mut api) = mock_client();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&seed_inputs()),
    );
    let denial = status(
        403,
        "Forbidden",
        "virtualservices.networking.istio.io \"modelsplit\" is forbidden: User \"system:serviceaccount:modelsplit-system:modelsplit-controller\" cannot patch resource \"virtualservices\"",
    );
    expect(&mut api, "PATCH", VS_PATH, 403, &denial).await;
    let (_, result) = finish(pass, &mut api).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, ClusterError::Forbidden { verb: "patch", .. }),
        "{error:?}"
    );
    assert_eq!(error.exit_code(), 4);
    let message = error.to_string();
    assert!(message.contains("RBAC forbids patch on virtualservices.networking.istio.io (v1beta1) in namespace modelmesh-apps"), "{message}");
    assert!(
        message.contains("ClusterRole modelsplit-controller"),
        "{message}"
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_replica_that_does_not_lead_writes_nothing() {
    let (client, mut api) = mock_client();
    let leadership = Leadership::new();
    let pass = start_pass(
        reconciler(client, leadership.clone()),
        snapshot_of(&seed_inputs()),
    );
    let (mut reconciler, result) = finish(pass, &mut api).await;
    assert!(matches!(result, Err(ClusterError::NotLeader)), "{result:?}");
    assert_no_more_requests(&mut api).await;

    // It led, then lost the lease: the next pass writes nothing either.
    leadership.lead_until(tokio::time::Instant::now() + std::time::Duration::from_secs(60));
    assert!(leadership.is_leading());
    leadership.step_down();
    let result = reconciler
        .reconcile_once(&snapshot_of(&seed_inputs()))
        .await;
    assert!(matches!(result, Err(ClusterError::NotLeader)), "{result:?}");
    assert_no_more_requests(&mut api).await;
}
