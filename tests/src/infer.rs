//! The inference calls a group's clients make through the gateway (REST and gRPC),
//! one at a time or as continuous load while a test changes the configuration.

use crate::http::HttpClient;
use crate::http::HttpError;
use crate::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::kserve::ModelInferRequest;
use crate::load::{run_many, run_until};
use crate::observe::{Observed, Tally};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// A ModelInfer request naming `model` in the message's `model_name` and in no header,
/// as standard KServe clients send it.
pub fn model_name_request(model: &str) -> tonic::Request<ModelInferRequest> {
    tonic::Request::new(ModelInferRequest {
        model_name: model.to_string(),
        ..Default::default()
    })
}

/// One REST infer call (`{"inputs": []}`) to `url`; a transport error panics.
pub async fn rest_infer(http: &HttpClient, url: &str) -> Observed {
    try_rest_infer(http, url)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One REST infer call (`{"inputs": []}`) to `url`, or the transport error.
pub async fn try_rest_infer(http: &HttpClient, url: &str) -> Result<Observed, HttpError> {
    let reply = http
        .post_json(url, &[], &serde_json::json!({"inputs": []}))
        .await?;
    Ok(Observed::from_rest(&reply))
}

/// `total` REST infer calls to `url` (`concurrency` in flight), tallied by member of
/// `namespace`.
pub async fn rest_tally(url: &str, namespace: &str, total: usize, concurrency: usize) -> Tally {
    let (http, url) = (HttpClient::default(), url.to_string());
    let observed = run_many(total, concurrency, move |_| {
        let (http, url) = (http.clone(), url.clone());
        async move { rest_infer(&http, &url).await }
    })
    .await;
    Tally::of(&observed, namespace)
}

/// `total` copies of `request` to the gateway at `base_url` over h2c (`concurrency` in
/// flight), tallied by member of `namespace`.
pub async fn grpc_tally(
    base_url: &str,
    request: tonic::Request<ModelInferRequest>,
    namespace: &str,
    total: usize,
    concurrency: usize,
) -> Tally {
    let client = grpc_client(base_url).await;
    let (metadata, message) = (request.metadata().clone(), request.into_inner());
    let observed = run_many(total, concurrency, move |_| {
        let mut client = client.clone();
        let mut request = tonic::Request::new(message.clone());
        *request.metadata_mut() = metadata.clone();
        async move { Observed::from_grpc(&client.model_infer(request).await) }
    })
    .await;
    Tally::of(&observed, namespace)
}

/// One gRPC infer call naming `vmodel` (see [`vmodel_request`]).
pub async fn grpc_infer(
    client: &mut GrpcInferenceServiceClient<Channel>,
    vmodel: &str,
) -> Observed {
    Observed::from_grpc(&client.model_infer(vmodel_request(vmodel)).await)
}

/// One gRPC infer call naming `model` in `model_name` (see [`model_name_request`]).
pub async fn grpc_infer_by_model_name(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
) -> Observed {
    Observed::from_grpc(&client.model_infer(model_name_request(model)).await)
}

/// One answer of continuous load, with when its request was sent and when the answer
/// arrived (to tell which configuration was in force for it).
#[derive(Debug, Clone)]
pub struct Timed {
    pub sent: Instant,
    pub answered: Instant,
    pub observed: Observed,
}

/// How many answers a load has received so far (shared by its tasks; one counter may
/// serve several loads).
#[derive(Debug, Clone, Default)]
pub struct Answers(Arc<AtomicUsize>);

impl Answers {
    /// Answers received so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn one_more(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until `more` answers have arrived whose requests were sent after this call
    /// began, with `in_flight` the most requests the loads counting here have in flight
    /// at once. Panics (naming `what`) if the loads stall for minutes: a stuck gateway.
    pub async fn wait_for_more(&self, more: usize, in_flight: usize, what: &str) {
        let target = self.count() + in_flight + more;
        let deadline = Instant::now() + ANSWERS_TIMEOUT;
        while self.count() < target {
            assert!(
                Instant::now() < deadline,
                "{what}: only {} of {target} answers after {ANSWERS_TIMEOUT:?}; the load stalled",
                self.count()
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

/// How long a load may take to get the answers a test waits for (generous: only a
/// stalled gateway takes this long).
const ANSWERS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);

/// REST infer calls to `url`, `concurrency` in flight, until `stop` is set; each
/// with the times it was sent and answered, counted in `answers` as they arrive.
pub fn timed_rest_until(
    stop: Arc<AtomicBool>,
    concurrency: usize,
    http: HttpClient,
    url: String,
    answers: Answers,
) -> JoinHandle<Vec<Timed>> {
    tokio::spawn(run_until(stop, 0, concurrency, move |_| {
        let (http, url, answers) = (http.clone(), url.clone(), answers.clone());
        async move {
            let sent = Instant::now();
            let observed = rest_infer(&http, &url).await;
            let answered = Instant::now();
            answers.one_more();
            Timed {
                sent,
                answered,
                observed,
            }
        }
    }))
}

/// gRPC infer calls naming `vmodel`, `concurrency` in flight, until `stop` is set;
/// each with the times it was sent and answered, counted in `answers`.
pub fn timed_grpc_until(
    stop: Arc<AtomicBool>,
    concurrency: usize,
    client: GrpcInferenceServiceClient<Channel>,
    vmodel: &'static str,
    answers: Answers,
) -> JoinHandle<Vec<Timed>> {
    tokio::spawn(run_until(stop, 0, concurrency, move |_| {
        let (mut client, answers) = (client.clone(), answers.clone());
        async move {
            let sent = Instant::now();
            let observed = grpc_infer(&mut client, vmodel).await;
            let answered = Instant::now();
            answers.one_more();
            Timed {
                sent,
                answered,
                observed,
            }
        }
    }))
}

/// The answers to those of `timed` sent at or after `from` and answered before `until`
/// (no end when `None`): with `from` the moment a configuration was confirmed in force
/// on every worker and `until` the moment the next change was written, exactly the
/// requests that configuration decided.
pub fn in_force_between(timed: &[Timed], from: Instant, until: Option<Instant>) -> Vec<Observed> {
    timed
        .iter()
        .filter(|t| t.sent >= from && until.is_none_or(|until| t.answered < until))
        .map(|t| t.observed.clone())
        .collect()
}
