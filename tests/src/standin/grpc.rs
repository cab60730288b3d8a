//! `inference.GRPCInferenceService` over h2c, resolving the model like ModelMesh
//! (`ModelMeshApi.startCall`): the request message's model name (field 1) when set,
//! else the `mm-vmodel-id` header; with a model list, any other name (a group's
//! name too) is NOT_FOUND.

use super::{Protocol, Received, Shared, MODEL_HEADER, NAMESPACE_HEADER, VMODEL_HEADER};
use crate::kserve::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use crate::kserve::infer_parameter::ParameterChoice;
use crate::kserve::model_infer_response::InferOutputTensor;
use crate::kserve::*;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

pub(super) async fn serve(listener: TcpListener, shared: Shared) {
    let service = GrpcInferenceServiceServer::new(StandInGrpc(shared));
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "stand-in gRPC server stopped");
    }
}

struct StandInGrpc(Shared);

impl StandInGrpc {
    /// Resolves and records the model of one call; NOT_FOUND for unknown models.
    fn resolve<T>(
        &self,
        request: &Request<T>,
        from_body: &str,
        method: &str,
    ) -> Result<String, Status> {
        let header = request
            .metadata()
            .get(VMODEL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let model = if from_body.is_empty() {
            header.clone().unwrap_or_default()
        } else {
            from_body.to_string()
        };
        let served = !model.is_empty() && self.0.config.serves(&model);
        self.0.journal.record(Received {
            protocol: Protocol::Grpc,
            model: model.clone(),
            path: format!("/inference.GRPCInferenceService/{method}"),
            vmodel_header: header,
            served,
        });
        if model.is_empty() {
            return Err(self.tag(Status::invalid_argument(format!(
                "no model: set the request's model name or the {VMODEL_HEADER} header"
            ))));
        }
        if !served {
            let namespace = &self.0.config.namespace;
            return Err(self.tag(Status::not_found(format!(
                "model {model} not found in namespace {namespace}"
            ))));
        }
        if self.0.fails(&model) {
            return Err(self.tag(Status::unavailable("failing as configured (--fail-every)")));
        }
        Ok(model)
    }

    fn tag(&self, mut status: Status) -> Status {
        if let Ok(value) = MetadataValue::try_from(self.0.config.namespace.as_str()) {
            status.metadata_mut().insert(NAMESPACE_HEADER, value);
        }
        status
    }

    fn answer<T>(&self, message: T, model: &str) -> Response<T> {
        let mut response = Response::new(message);
        let metadata = response.metadata_mut();
        if let Ok(value) = MetadataValue::try_from(self.0.config.namespace.as_str()) {
            metadata.insert(NAMESPACE_HEADER, value);
        }
        if let Ok(value) = MetadataValue::try_from(model) {
            metadata.insert(MODEL_HEADER, value);
        }
        response
    }
}

/// FNV-1a (64 bit) of `bytes`.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes
        .into_iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

fn string_param(value: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(value.to_string())),
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for StandInGrpc {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let model = self.resolve(&request, &request.get_ref().name, "ModelReady")?;
        Ok(self.answer(ModelReadyResponse { ready: true }, &model))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let model = self.resolve(&request, &request.get_ref().name, "ModelMetadata")?;
        let version = request.get_ref().version.clone();
        let message = ModelMetadataResponse {
            name: model.clone(),
            versions: vec![if version.is_empty() {
                "1".into()
            } else {
                version
            }],
            platform: "modelmesh-standin".into(),
            inputs: vec![],
            outputs: vec![],
        };
        Ok(self.answer(message, &model))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let model = self.resolve(&request, &request.get_ref().model_name, "ModelInfer")?;
        let body = request.get_ref();
        let mut parameters = std::collections::HashMap::new();
        parameters.insert(
            "namespace".to_string(),
            string_param(&self.0.config.namespace),
        );
        // What arrived of the tensors, so that tests can tell a rewritten message
        // reached ModelMesh intact: total raw bytes and their FNV-1a hash.
        let raw = &body.raw_input_contents;
        parameters.insert(
            "raw_input_bytes".to_string(),
            string_param(&raw.iter().map(Vec::len).sum::<usize>().to_string()),
        );
        parameters.insert(
            "raw_input_fnv1a".to_string(),
            string_param(&format!("{:016x}", fnv1a(raw.iter().flatten()))),
        );
        let message = ModelInferResponse {
            model_name: model.clone(),
            model_version: body.model_version.clone(),
            id: body.id.clone(),
            parameters,
            outputs: vec![InferOutputTensor {
                name: "served_by".into(),
                datatype: "BYTES".into(),
                shape: vec![1],
                parameters: Default::default(),
                contents: Some(InferTensorContents {
                    bytes_contents: vec![model.clone().into_bytes()],
                    ..Default::default()
                }),
            }],
            raw_output_contents: vec![],
        };
        Ok(self.answer(message, &model))
    }
}
