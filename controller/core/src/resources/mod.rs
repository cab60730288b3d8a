//! Typed Kubernetes objects: only the fields modelsplit reads or writes.
//!
//! Every type tolerates the fields real clusters add (unknown fields are ignored),
//! so the same types serve `render` (manifests from files) and `run` (watchers).

pub mod inference_service;
pub mod serving_runtime;
pub mod virtual_service;
pub mod wasm_plugin;

pub use inference_service::InferenceService;
pub use k8s_openapi::api::core::v1::Namespace;
pub use serving_runtime::ServingRuntime;
pub use virtual_service::VirtualService;
pub use wasm_plugin::WasmPlugin;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Label on every object modelsplit writes; the cluster controller prunes by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`], also the server-side-apply field manager.
pub const MANAGER: &str = "modelsplit";

/// The labels every output object carries.
pub fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_LABEL.to_string(), MANAGER.to_string())])
}

/// An annotation's value, if set.
pub(crate) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// A label's value, if set.
pub(crate) fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}
