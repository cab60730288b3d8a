//! Test scenery: stand-ins per namespace behind a real Envoy with the built filter.
//! Setup failures panic with the harness's message (these are test helpers).

use crate::gateway::{require_filter_wasm, Gateway};
use crate::http::{HttpClient, Reply};
use crate::infer::{grpc_client, vmodel_request};
use crate::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::kserve::ModelInferRequest;
use crate::load::run_many;
use crate::observe::Observed;
use crate::standin::{StandIn, StandInConfig};
use modelsplit_controller::local::envoy_files::{ExposedIsvc, Upstream};
use modelsplit_filter::config::{FilterConfig, GroupConfig};
use tonic::transport::Channel;

/// A group with `members` as (name, weight), gRPC on, not sticky.
pub fn group(namespace: &str, name: &str, members: &[(&str, u32)]) -> GroupConfig {
    GroupConfig::weighted(namespace, name, members)
}

/// Exposed isvcs `names` in `namespace` (each gets the VirtualService's routes).
pub fn exposed(namespace: &str, names: &[&str]) -> Vec<ExposedIsvc> {
    names
        .iter()
        .map(|n| ExposedIsvc::new(namespace, n))
        .collect()
}

/// Stand-ins and the gateway in front of them.
pub struct Fixture {
    // Declared first so Envoy stops before its upstreams do.
    pub gateway: Gateway,
    pub standins: Vec<StandIn>,
    pub http: HttpClient,
}

impl Fixture {
    /// Starts Envoy exposing `models` in `namespace` and a stand-in there that serves
    /// only those models (any other would answer 404).
    pub async fn serving(config: &FilterConfig, namespace: &str, models: &[&str]) -> Fixture {
        Fixture::start(
            config,
            &exposed(namespace, models),
            vec![StandInConfig::only(namespace, models)],
        )
        .await
    }

    /// Starts one stand-in per config and Envoy routing `isvcs` to them.
    pub async fn start(
        config: &FilterConfig,
        isvcs: &[ExposedIsvc],
        standins: Vec<StandInConfig>,
    ) -> Fixture {
        let wasm = require_filter_wasm();
        let mut started = Vec::new();
        for standin in standins {
            let namespace = standin.namespace.clone();
            let standin = StandIn::start_local(standin)
                .await
                .unwrap_or_else(|e| panic!("stand-in for {namespace}: {e}"));
            started.push(standin);
        }
        let upstreams: Vec<Upstream> = started
            .iter()
            .map(|s| Upstream::at(&s.namespace, s.rest_addr, s.grpc_addr))
            .collect();
        let gateway = Gateway::start(&wasm, config, isvcs, &upstreams)
            .await
            .unwrap_or_else(|e| panic!("starting Envoy: {e}"));
        Fixture {
            gateway,
            standins: started,
            http: HttpClient::default(),
        }
    }

    /// The stand-in of `namespace`.
    pub fn standin(&self, namespace: &str) -> &StandIn {
        self.standins
            .iter()
            .find(|s| s.namespace == namespace)
            .unwrap_or_else(|| panic!("no stand-in for namespace {namespace}"))
    }

    /// Sends a REST request through the gateway; transport errors panic.
    pub async fn rest(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let method = method.parse().expect("HTTP method");
        let body = if method == hyper::Method::POST {
            bytes::Bytes::from_static(br#"{"inputs":[]}"#)
        } else {
            bytes::Bytes::new()
        };
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.http
            .send(method, &self.gateway.url(path), &all, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A gRPC client connected to the gateway over h2c.
    pub async fn grpc(&self) -> GrpcInferenceServiceClient<Channel> {
        grpc_client(&self.gateway.url("")).await
    }

    /// Sends `total` REST requests (`concurrency` in flight); `headers(i)` gives the
    /// extra headers of request `i`. Transport errors panic.
    pub async fn rest_many(
        &self,
        total: usize,
        method: &str,
        path: &str,
        headers: impl Fn(usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Vec<Observed> {
        let method: hyper::Method = method.parse().expect("HTTP method");
        let (http, url) = (self.http.clone(), self.gateway.url(path));
        run_many(total, CONCURRENCY, move |i| {
            let (http, url, method, extra) =
                (http.clone(), url.clone(), method.clone(), headers(i));
            async move {
                let mut all: Vec<(&str, &str)> = vec![("content-type", "application/json")];
                all.extend(extra.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                let body = if method == hyper::Method::POST {
                    bytes::Bytes::from_static(br#"{"inputs":[]}"#)
                } else {
                    bytes::Bytes::new()
                };
                let reply = http
                    .send(method, &url, &all, body)
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                Observed::from_rest(&reply)
            }
        })
        .await
    }

    /// Sends `total` gRPC ModelInfer calls naming `vmodel` in the `mm-vmodel-id`
    /// header (and no model name in the body, as header clients do).
    pub async fn grpc_many(
        &self,
        total: usize,
        vmodel: &str,
        headers: impl Fn(usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Vec<Observed> {
        let vmodel = vmodel.to_string();
        self.grpc_many_with(total, move |i| {
            let mut request = vmodel_request(&vmodel);
            request.get_mut().id = i.to_string();
            add_metadata(&mut request, headers(i));
            request
        })
        .await
    }

    /// Sends `total` gRPC ModelInfer calls naming `model` in the message's
    /// `model_name` and in no header, as standard KServe clients do.
    pub async fn grpc_many_by_model_name(
        &self,
        total: usize,
        model: &str,
        headers: impl Fn(usize) -> Vec<(String, String)> + Send + Sync + 'static,
    ) -> Vec<Observed> {
        let model = model.to_string();
        self.grpc_many_with(total, move |i| {
            let mut request = tonic::Request::new(ModelInferRequest {
                model_name: model.clone(),
                id: i.to_string(),
                ..Default::default()
            });
            add_metadata(&mut request, headers(i));
            request
        })
        .await
    }

    /// Sends `total` gRPC ModelInfer calls, request `i` made by `request(i)`.
    pub async fn grpc_many_with(
        &self,
        total: usize,
        request: impl Fn(usize) -> tonic::Request<ModelInferRequest> + Send + Sync + 'static,
    ) -> Vec<Observed> {
        let client = self.grpc().await;
        run_many(total, CONCURRENCY, move |i| {
            let mut client = client.clone();
            let request = request(i);
            async move { Observed::from_grpc(&client.model_infer(request).await) }
        })
        .await
    }
}

/// Adds (name, value) pairs to a request's metadata; invalid ones panic (test helper).
pub fn add_metadata<T>(request: &mut tonic::Request<T>, pairs: Vec<(String, String)>) {
    let metadata = request.metadata_mut();
    for (name, value) in pairs {
        let name = tonic::metadata::MetadataKey::from_bytes(name.as_bytes()).expect("header name");
        metadata.insert(name, value.parse().expect("header value"));
    }
}

/// Requests in flight at once in the load helpers.
pub const CONCURRENCY: usize = 64;
