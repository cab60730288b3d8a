//! `modelsplit run`'s write path against a mock API server: the exact requests for
//! create, no-op, update and (staged) prune, the Events that follow, retries on 409/500,
//! failed and denied route writes holding back only their namespace's groups, the
//! `modelsplit.io/config-changed-at` stamp of the WasmPlugin, and a replica that does not
//! lead writing nothing.

mod cluster_mock;

use cluster_mock::*;
use k8s_openapi::jiff::Timestamp;
use modelsplit_controller::cluster::apply::{ObjectKey, Outcome};
use modelsplit_controller::cluster::kinds::ManagedKind;
use modelsplit_controller::cluster::lease::Leadership;
use modelsplit_controller::cluster::metrics::Metrics;
use modelsplit_controller::cluster::reconcile::{Publishing, ReconcileOutcome, Reconciler};
use modelsplit_controller::cluster::snapshot::Snapshot;
use modelsplit_controller::cluster::ClusterError;
use modelsplit_core::Settings;
use serde_json::{json, Value};
use std::time::Duration;

const VS_PATH: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/modelmesh-apps/virtualservices/modelsplit";
const WP_PATH: &str =
    "/apis/extensions.istio.io/v1alpha1/namespaces/istio-system/wasmplugins/modelsplit";
const TEAM_B_VS_PATH: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/team-b/virtualservices/modelsplit";
const OLD_NS_VS_PATH: &str =
    "/apis/networking.istio.io/v1beta1/namespaces/old-ns/virtualservices/modelsplit";
const CHANGED_AT: &str = "modelsplit.io/config-changed-at";
/// A config change older than any grace period.
const LONG_AGO: &str = "2026-01-01T00:00:00Z";
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

/// Answers the Event a member of the seed's namespace gets and checks its content.
async fn expect_event(api: &mut Handle, member: &str, type_: &str, reason: &str, note: &str) {
    expect_event_in(api, "modelmesh-apps", member, type_, reason, note).await;
}

/// Answers the Event a member of `namespace` gets and checks its content.
async fn expect_event_in(
    api: &mut Handle,
    namespace: &str,
    member: &str,
    type_: &str,
    reason: &str,
    note: &str,
) {
    let (seen, send) = next(api).await;
    assert_eq!(
        (seen.method.as_str(), seen.path()),
        (
            "POST",
            format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events").as_str()
        ),
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
            "metadata": {"name": "<name>", "namespace": namespace},
            "eventTime": "<time>",
            "action": "Reconcile",
            "reason": reason,
            "note": note,
            "type": type_,
            "reportingController": "modelsplit",
            "reportingInstance": "pod-a",
            "regarding": {
                "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "name": member, "namespace": namespace, "uid": format!("uid-{member}")
            }
        })
    );
    reply(send, 201, &seen.body);
}

/// A WasmPlugin as this controller publishes it: stamped with when its config changed.
fn stamped(plugin: &Value, changed_at: &str) -> Value {
    let mut plugin = plugin.clone();
    plugin["metadata"]["annotations"][CHANGED_AT] = json!(changed_at);
    plugin
}

/// `plugin` with these groups in its filter config.
fn with_groups(plugin: &Value, groups: Vec<Value>) -> Value {
    let mut plugin = plugin.clone();
    plugin["spec"]["pluginConfig"]["groups"] = Value::Array(groups);
    plugin
}

/// The seed's group as the golden WasmPlugin has it (80/20).
fn seed_group() -> Value {
    seed_golden()[0]["spec"]["pluginConfig"]["groups"][0].clone()
}

/// `group` with these member weights (in filter units: 10000 = 100 %).
fn weighted(group: &Value, weights: &[(&str, u32)]) -> Value {
    let mut group = group.clone();
    group["members"] = weights
        .iter()
        .map(|(name, weight)| json!({"name": name, "weight": weight}))
        .collect();
    group
}

/// The same objects in namespace `team-b`, group `bm` (members `bm-one`, `bm-two`).
fn to_team_b(value: &Value) -> Value {
    let text = value
        .to_string()
        .replace("modelmesh-apps", "team-b")
        .replace("ai-model", "bm");
    serde_json::from_str(&text).unwrap()
}

/// The seed in namespace modelmesh-apps and again in team-b, on the same gateway.
fn two_namespace_inputs() -> Vec<Value> {
    let mut inputs = seed_inputs();
    inputs.extend(seed_inputs().iter().map(to_team_b));
    inputs
}

/// A VirtualService this instance published for a namespace that has no models any more.
fn old_ns_routes() -> Value {
    let text = seed_golden()[1]
        .to_string()
        .replace("modelmesh-apps", "old-ns");
    as_observed(&serde_json::from_str(&text).unwrap(), "3")
}

/// The seed's VirtualService without the routes of `member`.
fn routes_without(member: &str) -> Value {
    let mut routes = seed_golden()[1].clone();
    routes["spec"]["http"]
        .as_array_mut()
        .unwrap()
        .retain(|r| !r["name"].as_str().unwrap().starts_with(member));
    routes
}

fn publishing(route_grace: Duration) -> Publishing {
    Publishing {
        route_grace,
        ..Publishing::default()
    }
}

/// What the config-changed-at stamp of a WasmPlugin apply must be.
enum Stamp {
    /// The time of this pass: the filter config changed.
    Fresh(Timestamp),
    /// The filter config did not change: the published stamp is kept.
    Kept(&'static str),
}

/// Answers the server-side apply of the WasmPlugin: exactly `expected` plus the stamp.
async fn expect_plugin_apply(api: &mut Handle, expected: &Value, stamp: Stamp) -> Value {
    let (seen, send) = next(api).await;
    assert_eq!(
        (seen.method.as_str(), seen.path()),
        ("PATCH", WP_PATH),
        "unexpected request {} {}",
        seen.method,
        seen.uri
    );
    assert_eq!(seen.query(), apply_query(), "{}", seen.uri);
    assert_eq!(
        seen.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let at = seen.body["metadata"]["annotations"][CHANGED_AT]
        .as_str()
        .unwrap_or_else(|| panic!("the WasmPlugin carries no {CHANGED_AT}: {}", seen.body))
        .to_string();
    match stamp {
        Stamp::Kept(kept) => assert_eq!(at, kept, "an unchanged filter config keeps its stamp"),
        Stamp::Fresh(since) => {
            let parsed: Timestamp = at.parse().expect("the stamp is RFC 3339");
            assert!(
                since <= parsed && parsed <= Timestamp::now(),
                "{at} is not the time of this pass (started {since})"
            );
        }
    }
    assert_eq!(seen.body, stamped(expected, &at), "apply body of {WP_PATH}");
    let answer = as_observed(&seen.body, "2");
    reply(send, 200, &answer);
    answer
}

/// Answers the Warning a member gets when its group's routes could not be written;
/// returns its note.
async fn expect_routes_not_written(api: &mut Handle, member: &str) -> String {
    let (seen, send) = next(api).await;
    assert_eq!(
        (seen.method.as_str(), seen.path()),
        (
            "POST",
            "/apis/events.k8s.io/v1/namespaces/modelmesh-apps/events"
        ),
        "{}",
        seen.uri
    );
    let event = &seen.body;
    assert_eq!(event["type"], "Warning", "{event}");
    assert_eq!(event["reason"], "RoutesNotWritten", "{event}");
    assert_eq!(event["regarding"]["name"], member, "{event}");
    assert_eq!(
        event["regarding"]["uid"],
        format!("uid-{member}"),
        "{event}"
    );
    let note = event["note"].as_str().unwrap_or("").to_string();
    assert!(
        note.starts_with("routes of group ai-model could not be written (VirtualService modelmesh-apps/modelsplit: ")
            && note.ends_with("the gateway keeps the group's last published split until they can"),
        "{note}"
    );
    reply(send, 201, &seen.body);
    note
}

fn deleted() -> Value {
    json!({"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}})
}

async fn expect_delete(api: &mut Handle, path: &str) {
    let seen = expect(api, "DELETE", path, 200, &deleted()).await;
    assert_eq!(seen.query(), Vec::<(String, String)>::new());
    assert_eq!(seen.body, json!({}), "DeleteOptions");
}

#[tokio::test]
async fn creates_the_plan_announces_ready_once_and_then_writes_nothing() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let started = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&seed_inputs()),
    );

    // VirtualService first: a member's route exists before the filter sends it traffic.
    let vs = expect_apply(&mut api, VS_PATH, &golden[1]).await;
    let wp = expect_plugin_apply(&mut api, &golden[0], Stamp::Fresh(started)).await;
    // The pass is over before any Event is answered: Events never delay routing.
    let (reconciler, result) = tokio::time::timeout(Duration::from_secs(5), pass)
        .await
        .expect("the pass does not wait for its Events")
        .expect("the code under test panicked");
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    reconciler.events_sent().await;
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

    // The watch now shows what was applied: the same state again is a no-op, with no Event
    // (the stamp is kept, so an idle controller writes nothing).
    let mut observed = seed_inputs();
    observed.extend([wp, vs]);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.writes.len(), 2);
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
        if object["kind"] == "WasmPlugin" {
            object["metadata"]["annotations"][CHANGED_AT] = json!(LONG_AGO);
        }
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
    assert_eq!(outcome.wake_at, None, "no route is kept for a grace period");
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_changed_split_updates_only_the_wasm_plugin() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let mut stale_plugin = as_observed(&stamped(&golden[0], LONG_AGO), "7");
    let members = &mut stale_plugin["spec"]["pluginConfig"]["groups"][0]["members"];
    members[0]["weight"] = json!(7000);
    members[1]["weight"] = json!(3000.0);
    let mut observed = seed_inputs();
    observed.extend([stale_plugin, as_observed(&golden[1], "7")]);

    let started = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    expect_plugin_apply(&mut api, &golden[0], Stamp::Fresh(started)).await;
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
async fn a_plugin_rewritten_for_another_reason_keeps_the_stamp_of_its_config() {
    // A new filter image (or a person's edit of the spec) is not a filter-config change:
    // the stamp stays, so no grace period restarts and no route is kept longer.
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let mut old_image = as_observed(&stamped(&golden[0], LONG_AGO), "7");
    old_image["spec"]["url"] = json!("oci://ghcr.io/modelsplit/modelsplit-filter:0.0.9");
    let mut observed = seed_inputs();
    observed.extend([old_image, as_observed(&golden[1], "7")]);
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    expect_plugin_apply(&mut api, &golden[0], Stamp::Kept(LONG_AGO)).await;
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(outcome.events, 0, "the group was served as planned already");
    assert_eq!(
        outcome.writes[1],
        (
            key(ManagedKind::WasmPlugin, "istio-system"),
            Outcome::Updated
        )
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_plugin_published_without_a_stamp_gets_one_once() {
    // Published by a controller from before the stamp: one write adds it (as of now, the
    // safe side: routes it stopped naming are kept for the grace period), then none.
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let mut observed = seed_inputs();
    observed.extend([as_observed(&golden[0], "7"), as_observed(&golden[1], "7")]);
    let started = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    let wp = expect_plugin_apply(&mut api, &golden[0], Stamp::Fresh(started)).await;
    let (reconciler, result) = finish(pass, &mut api).await;
    assert_eq!(result.unwrap().events, 0);
    assert_no_more_requests(&mut api).await;

    let mut observed = seed_inputs();
    observed.extend([wp, as_observed(&golden[1], "7")]);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    let (_, result) = finish(pass, &mut api).await;
    assert!(result
        .unwrap()
        .writes
        .iter()
        .all(|(_, o)| *o == Outcome::Unchanged));
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_removed_member_loses_its_route_only_after_the_filter_stopped_naming_it() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    // ai-model-two is deleted; the cluster still serves 80/20 with both routes.
    let inputs: Vec<Value> = seed_inputs()
        .into_iter()
        .filter(|o| o["metadata"]["name"] != "ai-model-two")
        .collect();
    let mut observed = inputs.clone();
    observed.extend([
        as_observed(&stamped(&golden[0], LONG_AGO), "7"),
        as_observed(&golden[1], "7"),
    ]);

    // Pass 1: the filter config drops the member; its route stays (the VS is unchanged).
    let started = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    let one_member = with_groups(
        &golden[0],
        vec![weighted(&seed_group(), &[("ai-model-one", 8000)])],
    );
    let wp = expect_plugin_apply(&mut api, &one_member, Stamp::Fresh(started)).await;
    let (_, announced) = next(&mut api).await;
    reply(announced, 201, &json!({}));
    let (reconciler, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
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

    // Pass 2, within the grace period after that change: still nothing removed, and the
    // controller knows when to look again.
    let mut observed = inputs.clone();
    observed.extend([wp.clone(), as_observed(&golden[1], "7")]);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    let (reconciler, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert!(outcome.writes.iter().all(|(_, o)| *o == Outcome::Unchanged));
    let stamp: Timestamp = wp["metadata"]["annotations"][CHANGED_AT]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(outcome.wake_at, Some(stamp + Duration::from_secs(15)));
    assert_no_more_requests(&mut api).await;

    // Pass 3, the grace period over: the route goes, the filter config stays as it is.
    let mut over = wp.clone();
    over["metadata"]["annotations"][CHANGED_AT] = json!(LONG_AGO);
    let mut observed = inputs;
    observed.extend([over, as_observed(&golden[1], "7")]);
    let pass = start_pass(reconciler, snapshot_of(&observed));
    expect_apply(&mut api, VS_PATH, &routes_without("ai-model-two")).await;
    let (_, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
        [
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Updated
            ),
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Unchanged
            ),
        ]
    );
    assert_eq!(outcome.wake_at, None);
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_namespace_leaving_the_mesh_is_emptied_then_pruned_and_foreign_objects_left_alone() {
    let (client, mut api) = mock_client();
    // The namespace left the mesh: neither its VirtualService nor the WasmPlugin is wanted.
    let mut inputs = seed_inputs();
    for object in &mut inputs {
        if object["kind"] == "Namespace" {
            object["metadata"]["labels"] = json!({});
        }
    }
    let golden = seed_golden();
    let mut foreign = vec![];
    // Not this controller's: another name, ...
    let mut hand_made = as_observed(&golden[1], "7");
    hand_made["metadata"]["name"] = json!("hand-made");
    hand_made["metadata"]["labels"] = json!({"app": "other"});
    foreign.push(hand_made);
    // ... another instance's (scoped controller) objects, ...
    let mut other_instance = as_observed(&golden[1], "7");
    other_instance["metadata"]["name"] = json!("modelsplit-team-x");
    foreign.push(other_instance);
    // ... and an object of this name without the managed-by label.
    let mut unlabelled = old_ns_routes();
    unlabelled["metadata"]["labels"] = json!({});
    foreign.push(unlabelled);
    let observed_with = |plugin: Value| {
        let mut observed = inputs.clone();
        observed.extend([plugin, as_observed(&golden[1], "7")]);
        observed.extend(foreign.iter().cloned());
        observed
    };

    // Pass 1: the filter config loses the group (emptied, still stamped); the routes stay.
    let started = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed_with(as_observed(
            &stamped(&golden[0], LONG_AGO),
            "7",
        ))),
    );
    let empty = expect_plugin_apply(
        &mut api,
        &with_groups(&golden[0], vec![]),
        Stamp::Fresh(started),
    )
    .await;
    // Its group is now outside the mesh: said once, on each member.
    let ignored = "modelmesh-apps/ai-model: ignored: namespace modelmesh-apps is not in the service mesh (label or annotation opendatahub.io/service-mesh=true, and a valid gateway)";
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupIgnored", ignored).await;
    }
    let (reconciler, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
        [(
            key(ManagedKind::WasmPlugin, "istio-system"),
            Outcome::Updated
        )]
    );
    assert!(outcome.wake_at.is_some());
    assert_no_more_requests(&mut api).await;

    // Pass 2, within the grace period: nothing changes.
    let pass = start_pass(reconciler, snapshot_of(&observed_with(empty.clone())));
    let (reconciler, result) = finish(pass, &mut api).await;
    let outcome = result.unwrap();
    assert_eq!(
        outcome.writes,
        [(
            key(ManagedKind::WasmPlugin, "istio-system"),
            Outcome::Unchanged
        )]
    );
    assert_no_more_requests(&mut api).await;

    // Pass 3, the grace period over: both go; nothing else is touched.
    let mut over = empty;
    over["metadata"]["annotations"][CHANGED_AT] = json!(LONG_AGO);
    let pass = start_pass(reconciler, snapshot_of(&observed_with(over)));
    expect_delete(&mut api, WP_PATH).await;
    expect_delete(&mut api, VS_PATH).await;
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
    assert_eq!(outcome.events, 0);
    assert_no_more_requests(&mut api).await;
}

#[tokio::test(start_paused = true)]
async fn conflicts_and_server_errors_are_retried_with_backoff_and_nothing_is_lost() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let started = tokio::time::Instant::now();
    let wall = Timestamp::now();
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

    expect_plugin_apply(&mut api, &golden[0], Stamp::Fresh(wall)).await;
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
    // Published: ai-model with one member (100 %) and only its route; bm at 70/30.
    // Wanted: ai-model gains ai-model-two (80/20), bm moves to 80/20.
    let group_a = seed_group();
    let group_b = to_team_b(&group_a);
    let published = with_groups(
        &golden[0],
        vec![
            weighted(&group_a, &[("ai-model-one", 10000)]),
            weighted(&group_b, &[("bm-one", 7000), ("bm-two", 3000)]),
        ],
    );
    let observed_with = |plugin: Value, routes_a: Value| {
        let mut observed = two_namespace_inputs();
        observed.extend([
            plugin,
            as_observed(&routes_a, "7"),
            as_observed(&to_team_b(&golden[1]), "7"),
            // Would be pruned by a pass whose writes all succeeded.
            old_ns_routes(),
        ]);
        observed
    };
    let first = observed_with(
        as_observed(&stamped(&published, LONG_AGO), "7"),
        routes_without("ai-model-two"),
    );
    let wall = Timestamp::now();
    let pass = start_pass(
        // No grace period: whatever may be pruned is pruned by the first clean pass.
        reconciler(client, Leadership::always()).with_publishing(publishing(Duration::ZERO)),
        snapshot_of(&first),
    );
    for _ in 0..5 {
        let seen = expect(
            &mut api,
            "PATCH",
            VS_PATH,
            503,
            &status(503, "ServiceUnavailable", "try later"),
        )
        .await;
        assert_eq!(seen.body, golden[1], "the route of the new member");
    }
    // team-b's routes are in place: bm moves on; ai-model keeps its published split,
    // so the filter never picks ai-model-two before its route exists.
    let held = with_groups(
        &golden[0],
        vec![
            weighted(&group_a, &[("ai-model-one", 10000)]),
            group_b.clone(),
        ],
    );
    let wp = expect_plugin_apply(&mut api, &held, Stamp::Fresh(wall)).await;
    // No prune in a pass with a failed write. Events after the writes: bm is ready;
    // ai-model's members hear why their split did not change (no "ready" for it yet).
    for member in ["bm-one", "bm-two"] {
        expect_event_in(
            &mut api,
            "team-b",
            member,
            "Normal",
            "GroupReady",
            "team-b/bm: valid: bm-one=80% bm-two=20%",
        )
        .await;
    }
    for member in ["ai-model-one", "ai-model-two"] {
        let note = expect_routes_not_written(&mut api, member).await;
        assert!(note.contains("try later"), "names the API's reason: {note}");
    }
    let (reconciler, result) = finish(pass, &mut api).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, ClusterError::Incomplete { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind().metric_label(), "incomplete");
    assert!(
        error
            .to_string()
            .contains("apply VirtualService modelmesh-apps/modelsplit"),
        "{error}"
    );
    assert_no_more_requests(&mut api).await;

    // The next pass writes the route, then moves ai-model, then prunes.
    let wall = Timestamp::now();
    let pass = start_pass(
        reconciler,
        snapshot_of(&observed_with(wp, routes_without("ai-model-two"))),
    );
    expect_apply(&mut api, VS_PATH, &golden[1]).await;
    let both = with_groups(&golden[0], vec![group_a, group_b]);
    expect_plugin_apply(&mut api, &both, Stamp::Fresh(wall)).await;
    expect_delete(&mut api, OLD_NS_VS_PATH).await;
    for member in ["ai-model-one", "ai-model-two"] {
        expect_event(&mut api, member, "Normal", "GroupReady", SEED_LINE).await;
    }
    let (_, result) = finish(pass, &mut api).await;
    assert_eq!(
        result.unwrap().writes,
        [
            (
                key(ManagedKind::VirtualService, "modelmesh-apps"),
                Outcome::Updated
            ),
            (
                key(ManagedKind::VirtualService, "team-b"),
                Outcome::Unchanged
            ),
            (
                key(ManagedKind::WasmPlugin, "istio-system"),
                Outcome::Updated
            ),
            (key(ManagedKind::VirtualService, "old-ns"), Outcome::Pruned),
        ]
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn rbac_denying_a_route_write_holds_back_its_namespace_and_reports_the_fix() {
    let (client, mut api) = mock_client();
    let golden = seed_golden();
    let mut observed = two_namespace_inputs();
    // Would be pruned by a pass whose writes all succeeded.
    observed.push(old_ns_routes());
    let wall = Timestamp::now();
    let pass = start_pass(
        reconciler(client, Leadership::always()),
        snapshot_of(&observed),
    );
    let denial = status(
        403,
        "Forbidden",
        "virtualservices.networking.istio.io \"modelsplit\" is forbidden: User \"system:serviceaccount:modelsplit-system:modelsplit-controller\" cannot patch resource \"virtualservices\"",
    );
    // Denied at once (no retry); the other namespace still gets its routes and its group.
    expect(&mut api, "PATCH", VS_PATH, 403, &denial).await;
    expect_apply(&mut api, TEAM_B_VS_PATH, &to_team_b(&golden[1])).await;
    let only_b = with_groups(&golden[0], vec![to_team_b(&seed_group())]);
    expect_plugin_apply(&mut api, &only_b, Stamp::Fresh(wall)).await;
    // Nothing is pruned in this pass.
    for member in ["bm-one", "bm-two"] {
        expect_event_in(
            &mut api,
            "team-b",
            member,
            "Normal",
            "GroupReady",
            "team-b/bm: valid: bm-one=80% bm-two=20%",
        )
        .await;
    }
    let fix = "RBAC forbids patch on virtualservices.networking.istio.io (v1beta1) in namespace modelmesh-apps";
    for member in ["ai-model-one", "ai-model-two"] {
        let note = expect_routes_not_written(&mut api, member).await;
        assert!(note.contains(fix), "{note}");
    }
    let (_, result) = finish(pass, &mut api).await;
    let error = result.unwrap_err();
    assert!(
        matches!(error, ClusterError::Incomplete { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(fix), "{message}");
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
