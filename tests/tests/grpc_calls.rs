//! gRPC through the gateway beyond the split: model-scoped calls of a group, plain
//! isvcs, the request's own model name, and groups published without gRPC.

use modelsplit_e2e::fixture::{group, Fixture};
use modelsplit_e2e::kserve::{ModelInferRequest, ModelMetadataRequest, ModelReadyRequest};
use modelsplit_e2e::observe::ROUTED_HEADER;
use modelsplit_e2e::standin::{MODEL_HEADER, NAMESPACE_HEADER};
use modelsplit_filter::config::FilterConfig;
use modelsplit_filter::plan::requests_counter_name;
use tonic::Request;

const NS: &str = "apps";

fn with_vmodel<T>(message: T, vmodel: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("mm-vmodel-id", vmodel.parse().unwrap());
    request
}

fn header(metadata: &tonic::metadata::MetadataMap, name: &str) -> Option<String> {
    metadata
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn fixture() -> Fixture {
    let mut no_grpc = group(NS, "rest-only", &[("m-one", 1)]);
    no_grpc.grpc = false;
    let config = FilterConfig::with_groups(vec![
        group(NS, "ai-model", &[("m-one", 1), ("m-two", 1)]),
        no_grpc,
    ]);
    Fixture::serving(&config, NS, &["m-one", "m-two", "plain"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_metadata_of_a_group_are_answered_by_a_member() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    for _ in 0..20 {
        let ready = client
            .model_ready(with_vmodel(ModelReadyRequest::default(), "ai-model"))
            .await
            .unwrap();
        let member = header(ready.metadata(), MODEL_HEADER).unwrap();
        assert!(ready.get_ref().ready);
        assert_eq!(
            header(ready.metadata(), ROUTED_HEADER),
            Some(member.clone())
        );
        assert!(member == "m-one" || member == "m-two");

        let metadata = client
            .model_metadata(with_vmodel(ModelMetadataRequest::default(), "ai-model"))
            .await
            .unwrap();
        assert_eq!(
            header(metadata.metadata(), ROUTED_HEADER).as_deref(),
            Some(metadata.get_ref().name.as_str())
        );
        assert_eq!(
            header(metadata.metadata(), NAMESPACE_HEADER).as_deref(),
            Some(NS)
        );
    }
    assert!(
        client
            .server_live(with_vmodel(Default::default(), "plain"))
            .await
            .unwrap()
            .get_ref()
            .live
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_isvc_calls_pass_through_untouched() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    for model in ["plain", "m-one", "m-two"] {
        let reply = client
            .model_infer(with_vmodel(ModelInferRequest::default(), model))
            .await
            .unwrap();
        assert_eq!(reply.get_ref().model_name, model);
        assert_eq!(
            header(reply.metadata(), ROUTED_HEADER),
            None,
            "{model} is not a group"
        );
    }
    let stats = fx.gateway.stats_settled("modelsplit").await.unwrap();
    assert_eq!(
        stats.get(&requests_counter_name(NS, "ai-model", "m-one")),
        0
    );
    assert!(fx
        .standin(NS)
        .received()
        .iter()
        .all(|r| r.vmodel_header.as_deref() == Some(r.model.as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_without_grpc_and_unknown_names_are_not_routed() {
    let fx = fixture().await;
    let mut client = fx.grpc().await;
    for name in ["rest-only", "nobody", "ai-modelX"] {
        let status = client
            .model_infer(with_vmodel(ModelInferRequest::default(), name))
            .await
            .unwrap_err();
        // No route matches: Envoy answers 404, which gRPC reads as UNIMPLEMENTED.
        assert_eq!(
            status.code(),
            tonic::Code::Unimplemented,
            "{name}: {status:?}"
        );
        assert_eq!(header(status.metadata(), ROUTED_HEADER), None);
    }
    assert_eq!(
        fx.standin(NS).received(),
        vec![],
        "nothing reached the stand-in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_requests_carrying_the_grpc_header_are_not_rewritten_by_it() {
    let fx = fixture().await;
    // Only gRPC content types make the header count (docs/design.md section 2, step 3).
    let reply = fx
        .rest(
            "POST",
            "/modelmesh/apps/v2/models/plain/infer",
            &[("mm-vmodel-id", "ai-model")],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header(MODEL_HEADER), Some("plain"));
    assert_eq!(reply.header(ROUTED_HEADER), None);
}
