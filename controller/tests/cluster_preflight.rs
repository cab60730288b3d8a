//! Startup checks against a mock API server: a missing CRD (404) and an RBAC denial (403)
//! stop `modelsplit run` with a message naming the resource and the fix, and an exit code.

mod cluster_mock;

use cluster_mock::*;
use modelsplit_controller::cluster::preflight;
use modelsplit_controller::cluster::ClusterError;
use serde_json::{json, Value};

const LISTS: [&str; 6] = [
    "/api/v1/namespaces",
    "/apis/serving.kserve.io/v1alpha1/servingruntimes",
    "/apis/serving.kserve.io/v1beta1/inferenceservices",
    "/apis/extensions.istio.io/v1alpha1/wasmplugins",
    "/apis/networking.istio.io/v1alpha3/envoyfilters",
    "/apis/networking.istio.io/v1beta1/virtualservices",
];

const REVIEWS: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";

fn empty_list() -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {"resourceVersion": "1"}, "items": []})
}

/// (group, resource, verb, namespace, name) of one access review.
type Review = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Every access review, in order.
fn reviews() -> Vec<Review> {
    let mut all = vec![
        ("", "namespaces", "watch", None, None),
        ("serving.kserve.io", "servingruntimes", "watch", None, None),
        (
            "serving.kserve.io",
            "inferenceservices",
            "watch",
            None,
            None,
        ),
    ];
    for (group, resource) in [
        ("extensions.istio.io", "wasmplugins"),
        ("networking.istio.io", "envoyfilters"),
        ("networking.istio.io", "virtualservices"),
    ] {
        for verb in ["watch", "create", "patch", "delete"] {
            all.push((group, resource, verb, None, None));
        }
    }
    all.push(("events.k8s.io", "events", "create", None, None));
    // The Lease by name for get/update (a Role may grant only that name); `create`
    // cannot be limited by name.
    for verb in ["get", "create", "update"] {
        all.push((
            "coordination.k8s.io",
            "leases",
            verb,
            Some("modelsplit-system"),
            (verb != "create").then_some("modelsplit-controller"),
        ));
    }
    all
}

async fn expect_list(api: &mut Handle, path: &str, status_code: u16, answer: &Value) {
    let seen = expect(api, "GET", path, status_code, answer).await;
    assert_eq!(seen.query(), vec![("limit".to_string(), "1".to_string())]);
}

/// Answers one access review, checking it asks exactly this.
async fn expect_review(api: &mut Handle, review: Review, allowed: bool) {
    let (group, resource, verb, namespace, name) = review;
    let (seen, send) = next(api).await;
    assert_eq!((seen.method.as_str(), seen.path()), ("POST", REVIEWS));
    let mut attributes = json!({"group": group, "resource": resource, "verb": verb});
    if let Some(namespace) = namespace {
        attributes["namespace"] = json!(namespace);
    }
    if let Some(name) = name {
        attributes["name"] = json!(name);
    }
    assert_eq!(
        seen.body,
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
               "metadata": {}, "spec": {"resourceAttributes": attributes}})
    );
    let mut answer = seen.body.clone();
    answer["status"] = if allowed {
        json!({"allowed": true})
    } else {
        json!({"allowed": false, "reason": "no RBAC policy matched"})
    };
    reply(send, 201, &answer);
}

fn start(client: kube::Client) -> tokio::task::JoinHandle<Result<(), ClusterError>> {
    tokio::spawn(async move {
        preflight::check(&client, "modelsplit-system", "modelsplit-controller").await
    })
}

#[tokio::test]
async fn everything_in_place_passes_after_listing_each_resource_and_reviewing_each_write() {
    let (client, mut api) = mock_client();
    let check = start(client);
    for path in LISTS {
        expect_list(&mut api, path, 200, &empty_list()).await;
    }
    for review in reviews() {
        expect_review(&mut api, review, true).await;
    }
    finish(check, &mut api).await.expect("preflight passes");
}

#[tokio::test]
async fn a_missing_inference_service_crd_stops_with_exit_code_3_and_the_fix() {
    let (client, mut api) = mock_client();
    let check = start(client);
    expect_list(&mut api, LISTS[0], 200, &empty_list()).await;
    expect_list(&mut api, LISTS[1], 200, &empty_list()).await;
    let missing = status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    expect_list(&mut api, LISTS[2], 404, &missing).await;
    let error = finish(check, &mut api).await.unwrap_err();
    assert_eq!(error.exit_code(), 3);
    assert_eq!(
        error.to_string(),
        "the API server does not serve inferenceservices.serving.kserve.io (v1beta1): its \
         CustomResourceDefinition is not installed; install KServe ModelMesh (the \
         serving.kserve.io CRDs, e.g. from the ODH model serving component) first"
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_missing_istio_crd_names_istio() {
    let (client, mut api) = mock_client();
    let check = start(client);
    for path in &LISTS[..3] {
        expect_list(&mut api, path, 200, &empty_list()).await;
    }
    let missing = status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    expect_list(&mut api, LISTS[3], 404, &missing).await;
    let error = finish(check, &mut api).await.unwrap_err();
    assert!(matches!(error, ClusterError::CrdMissing { .. }));
    assert!(
        error
            .to_string()
            .contains("wasmplugins.extensions.istio.io (v1alpha1)")
            && error.to_string().contains("install Istio (its extensions.istio.io CRDs; modelsplit is tested with istiod of the 1.31 development line)"),
        "{error}"
    );
}

#[tokio::test]
async fn rbac_forbidding_a_list_stops_with_exit_code_4() {
    let (client, mut api) = mock_client();
    let check = start(client);
    let denied = status(
        403,
        "Forbidden",
        "namespaces is forbidden: User \"system:serviceaccount:modelsplit-system:modelsplit-controller\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
    );
    expect_list(&mut api, LISTS[0], 403, &denied).await;
    let error = finish(check, &mut api).await.unwrap_err();
    assert_eq!(error.exit_code(), 4);
    let message = error.to_string();
    assert!(
        message.starts_with("RBAC forbids list on namespaces (v1): namespaces is forbidden"),
        "{message}"
    );
    assert!(message.contains("apply controller/deploy/"), "{message}");
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn rbac_denying_a_write_is_found_before_the_first_write() {
    let (client, mut api) = mock_client();
    let check = start(client);
    for path in LISTS {
        expect_list(&mut api, path, 200, &empty_list()).await;
    }
    let all = reviews();
    let denied_at = all
        .iter()
        .position(|r| r.1 == "wasmplugins" && r.2 == "patch")
        .unwrap();
    for review in &all[..denied_at] {
        expect_review(&mut api, *review, true).await;
    }
    expect_review(&mut api, all[denied_at], false).await;
    let error = finish(check, &mut api).await.unwrap_err();
    assert_eq!(error.exit_code(), 4);
    assert_eq!(
        error.to_string(),
        "RBAC forbids patch on wasmplugins.extensions.istio.io (v1alpha1): no RBAC policy matched; \
         apply controller/deploy/ (ClusterRole modelsplit-controller) or grant it to the \
         controller's ServiceAccount"
    );
    assert_no_more_requests(&mut api).await;
}

#[tokio::test]
async fn a_cluster_without_access_reviews_is_not_refused() {
    let (client, mut api) = mock_client();
    let check = start(client);
    for path in LISTS {
        expect_list(&mut api, path, 200, &empty_list()).await;
    }
    // Access reviews unavailable: each is skipped with a warning; the writes will tell.
    for _ in reviews() {
        expect(
            &mut api,
            "POST",
            REVIEWS,
            404,
            &status(404, "NotFound", "not found"),
        )
        .await;
    }
    finish(check, &mut api).await.expect("preflight passes");
}

#[tokio::test]
async fn the_lease_of_another_instance_is_reviewed_by_its_own_name() {
    let (client, mut api) = mock_client();
    let check = tokio::spawn(async move {
        preflight::check(&client, "team-a", "modelsplit-team-a-controller").await
    });
    for path in LISTS {
        expect_list(&mut api, path, 200, &empty_list()).await;
    }
    for (group, resource, verb, namespace, name) in reviews() {
        let review = if resource == "leases" {
            let name = name.map(|_| "modelsplit-team-a-controller");
            (group, resource, verb, Some("team-a"), name)
        } else {
            (group, resource, verb, namespace, name)
        };
        expect_review(&mut api, review, true).await;
    }
    finish(check, &mut api).await.expect("preflight passes");
}
