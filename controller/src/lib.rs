//! modelsplit's controller: the shells around the pure core ([`modelsplit_core`]).
//!
//! - [`render`]: `modelsplit render`, manifests from files in, YAML out.
//! - [`cluster`]: `modelsplit run`, the planner as an in-cluster controller.
//! - [`local`]: `modelsplit local`, the planner feeding a local Envoy through files.
//! - [`status`]: `modelsplit status`, a gateway's groups from its own numbers.
//! - [`rollouts`]: automated rollouts, shared by `local` and `run`.
//!
//! The binary (`src/main.rs`) only parses the command line and calls one of them.

pub mod cluster;
pub mod local;
pub mod render;
pub mod rollouts;
pub mod status;
