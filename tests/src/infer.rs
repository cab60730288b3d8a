//! The inference calls a group's clients make through the gateway (REST and gRPC),
//! one at a time or as continuous load while a test changes the configuration.

use crate::http::HttpClient;
use crate::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::kserve::ModelInferRequest;
use crate::load::run_until;
use crate::observe::Observed;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// A gRPC client connected over h2c to the gateway at `base_url`.
pub async fn grpc_client(base_url: &str) -> GrpcInferenceServiceClient<Channel> {
    let channel = Channel::from_shared(base_url.to_string())
        .expect("gateway URL")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("gRPC connection to the gateway: {e}"));
    GrpcInferenceServiceClient::new(channel)
}

/// A ModelInfer request naming `vmodel` in the `mm-vmodel-id` header and no model
/// name in the body, as group clients send it.
pub fn vmodel_request(vmodel: &str) -> tonic::Request<ModelInferRequest> {
    let mut request = tonic::Request::new(ModelInferRequest::default());
    request
        .metadata_mut()
        .insert("mm-vmodel-id", vmodel.parse().expect("header value"));
    request
}

/// One REST infer call (`{"inputs": []}`) to `url`; a transport error panics.
pub async fn rest_infer(http: &HttpClient, url: &str) -> Observed {
    let reply = http
        .post_json(url, &[], &serde_json::json!({"inputs": []}))
        .await;
    Observed::from_rest(&reply.unwrap_or_else(|e| panic!("{e}")))
}

/// One gRPC infer call naming `vmodel` (see [`vmodel_request`]).
pub async fn grpc_infer(
    client: &mut GrpcInferenceServiceClient<Channel>,
    vmodel: &str,
) -> Observed {
    Observed::from_grpc(&client.model_infer(vmodel_request(vmodel)).await)
}

/// REST infer calls to `url`, `concurrency` in flight, until `stop` is set; each
/// with the time it was sent, to tell which configuration was in force.
pub fn timed_rest_until(
    stop: Arc<AtomicBool>,
    concurrency: usize,
    http: HttpClient,
    url: String,
) -> JoinHandle<Vec<(Instant, Observed)>> {
    tokio::spawn(run_until(stop, 0, concurrency, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let started = Instant::now();
            (started, rest_infer(&http, &url).await)
        }
    }))
}

/// gRPC infer calls naming `vmodel`, `concurrency` in flight, until `stop` is set;
/// each with the time it was sent.
pub fn timed_grpc_until(
    stop: Arc<AtomicBool>,
    concurrency: usize,
    client: GrpcInferenceServiceClient<Channel>,
    vmodel: &'static str,
) -> JoinHandle<Vec<(Instant, Observed)>> {
    tokio::spawn(run_until(stop, 0, concurrency, move |_| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            (started, grpc_infer(&mut client, vmodel).await)
        }
    }))
}

/// The answers to those of `timed` sent at or after `from` and before `until` (no
/// end when `None`): the requests a configuration was in force for.
pub fn sent_between(
    timed: &[(Instant, Observed)],
    from: Instant,
    until: Option<Instant>,
) -> Vec<Observed> {
    timed
        .iter()
        .filter(|(sent, _)| *sent >= from && until.is_none_or(|until| *sent < until))
        .map(|(_, observed)| observed.clone())
        .collect()
}
