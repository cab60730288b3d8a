//! The local flow end to end: manifests -> `modelsplit local` (a process) -> Envoy
//! (started from the bootstrap it wrote) -> ModelMesh stand-ins. A group splits
//! REST and gRPC traffic as its annotations say; an isvc outside any group is
//! routed as its VirtualService would route it; an unexposed one is not routed.

use modelsplit_e2e::infer::{grpc_infer, rest_infer, vmodel_request};
use modelsplit_e2e::load::run_many;
use modelsplit_e2e::local_gateway::{
    group_manifest, isvc_manifest, namespace_manifest, LocalGateway,
};
use modelsplit_e2e::observe::Tally;
use modelsplit_e2e::split::check_split;
use modelsplit_e2e::standin::StandInConfig;

const NS: &str = "apps";
const REQUESTS: usize = 4000;

async fn start() -> LocalGateway {
    let models = format!(
        "{}{}",
        isvc_manifest(NS, "plain", "routed", None),
        isvc_manifest(NS, "hidden", "internal", None)
    );
    LocalGateway::start(
        &[
            ("namespace.yaml", &namespace_manifest(NS)),
            (
                "group.yaml",
                &group_manifest(NS, "ai-model", &[("one", "80"), ("two", "20")]),
            ),
            ("models.yaml", &models),
        ],
        &[StandInConfig::any_model(NS)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_grpc_requests_split_as_the_manifests_say() {
    let gw = start().await;
    assert!(
        gw.local_output()
            .contains("apps/ai-model: valid: one=80% two=20%"),
        "{}",
        gw.local_output()
    );
    let weights = [("one", 80), ("two", 20)];

    let (http, url) = (
        gw.http.clone(),
        gw.url("/modelmesh/apps/v2/models/ai-model/infer"),
    );
    let rest = run_many(REQUESTS, 32, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move { rest_infer(&http, &url).await }
    })
    .await;
    let split = check_split(&Tally::of(&rest, NS).by_member, &weights);
    eprintln!("REST through modelsplit local, {REQUESTS} requests:\n{split}");
    let tally = Tally::of(&rest, NS);
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    assert!(split.passes(), "{split}");

    let client = gw.grpc().await;
    let grpc = run_many(REQUESTS, 32, move |_| {
        let mut client = client.clone();
        async move { grpc_infer(&mut client, "ai-model").await }
    })
    .await;
    let tally = Tally::of(&grpc, NS);
    let split = check_split(&tally.by_member, &weights);
    eprintln!("gRPC through modelsplit local, {REQUESTS} requests:\n{split}");
    assert_eq!(tally.problem_count, 0, "{:?}", tally.problems);
    assert!(split.passes(), "{split}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_isvc_is_routed_and_an_unexposed_one_is_not() {
    let gw = start().await;
    let standin = gw.standin(NS);

    let plain = gw
        .http
        .post_json(
            &gw.url("/modelmesh/apps/v2/models/plain/infer"),
            &[],
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "{}", plain.text());
    assert_eq!(plain.json()["path"], "/v2/models/plain/infer");

    let mut client = gw.grpc().await;
    let reply = client
        .model_infer(vmodel_request("plain"))
        .await
        .expect("gRPC to a plain isvc");
    assert_eq!(reply.get_ref().model_name, "plain");

    standin.clear();
    let hidden = gw
        .http
        .post_json(
            &gw.url("/modelmesh/apps/v2/models/hidden/infer"),
            &[],
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(
        hidden.status, 404,
        "an isvc whose runtime lacks enable-route has no route"
    );
    let status = client
        .model_infer(vmodel_request("hidden"))
        .await
        .expect_err("no gRPC route for an unexposed isvc");
    assert_eq!(
        status.code(),
        tonic::Code::Unimplemented,
        "Envoy's 404 as gRPC: {status:?}"
    );
    assert!(
        standin.received().iter().all(|r| r.model != "hidden"),
        "the unexposed isvc was reached: {:?}",
        standin.received()
    );
}
