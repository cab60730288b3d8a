//! End-to-end tests of modelsplit: a ModelMesh stand-in, the local Envoy gateway's
//! files and a harness that runs the real Envoy with the built filter.

pub mod kserve {
    //! KServe v2 gRPC types, client and server (generated from `proto/`).
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("inference");
}
pub mod cluster;
pub mod envoy_admin;
pub mod fixture;
pub mod gateway;
pub mod grpc_raw;
pub mod guide;
/// The local gateway's Envoy files: the controller's implementation (`modelsplit local`).
pub use modelsplit_controller::local::envoy_files as gateway_files;
pub mod http;
pub mod infer;
pub mod load;
pub mod local_gateway;
pub mod observe;
pub mod split;
pub mod standin;
