//! modelsplit's controller: from labelled KServe InferenceServices to the Istio
//! `WasmPlugin` (the filter and its configuration) and `VirtualService`s (routes to
//! ModelMesh) that split a group's traffic by weight.
//!
//! - [`planner`]: the pure core — observed objects in, desired resources and a report out.
//! - [`rules`]: weight parsing, validation reasons, gRPC name ownership.
//! - [`resources`]: the Kubernetes object types read and written.
//! - [`render`]: manifests from files in, YAML out (`modelsplit render`).
//! - [`settings`]: gateway defaults and WasmPlugin settings.
//! - [`cluster`]: `modelsplit run`, the planner as an in-cluster controller.

pub mod cluster;
pub mod planner;
pub mod render;
pub mod report;
pub mod resources;
pub mod rules;
pub mod settings;

pub use planner::{plan, Observed, Plan, PreviousConfigs};
pub use settings::Settings;
