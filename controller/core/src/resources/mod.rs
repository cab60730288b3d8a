//! Typed Kubernetes objects: only the fields modelsplit reads or writes.
//!
//! Every type tolerates the fields real clusters add (unknown fields are ignored),
//! so the same types serve `render` (manifests from files) and `run` (watchers).

pub mod envoy_filter;
pub mod gateway_filter;
pub mod inference_service;
pub mod serving_runtime;
pub mod virtual_service;
pub mod wasm_plugin;

pub use envoy_filter::EnvoyFilter;
pub use gateway_filter::GatewayFilter;
pub use inference_service::InferenceService;
pub use k8s_openapi::api::core::v1::Namespace;
pub use serving_runtime::ServingRuntime;
pub use virtual_service::VirtualService;
pub use wasm_plugin::WasmPlugin;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::fmt;

/// Label on every object modelsplit writes; the cluster controller prunes by it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`], also the server-side-apply field manager.
pub const MANAGER: &str = "modelsplit";

/// The kinds of object modelsplit reads: what manifests may hold and what notices
/// (Events in a cluster) are about.
///
/// Declared in alphabetical order: notices sort by kind, as they did by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    InferenceService,
    Namespace,
    ServingRuntime,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [
        ObjectKind::InferenceService,
        ObjectKind::Namespace,
        ObjectKind::ServingRuntime,
    ];

    /// The `kind` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            ObjectKind::InferenceService => "InferenceService",
            ObjectKind::Namespace => "Namespace",
            ObjectKind::ServingRuntime => "ServingRuntime",
        }
    }

    /// The API group ("" for the core group).
    pub const fn group(self) -> &'static str {
        match self {
            ObjectKind::Namespace => "",
            ObjectKind::InferenceService | ObjectKind::ServingRuntime => "serving.kserve.io",
        }
    }

    /// The `apiVersion` modelsplit reads.
    pub const fn api_version(self) -> &'static str {
        match self {
            ObjectKind::InferenceService => "serving.kserve.io/v1beta1",
            ObjectKind::Namespace => "v1",
            ObjectKind::ServingRuntime => "serving.kserve.io/v1alpha1",
        }
    }

    /// The kind named `kind` in API group `group`, if modelsplit reads it.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Self> {
        ObjectKind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_kinds_sort_as_their_names_do() {
        let mut by_name = ObjectKind::ALL;
        by_name.sort_by_key(|k| k.as_str());
        let mut by_kind = ObjectKind::ALL;
        by_kind.sort();
        assert_eq!(by_kind, by_name);
    }

    #[test]
    fn object_kinds_are_found_by_group_and_kind() {
        for kind in ObjectKind::ALL {
            assert_eq!(
                ObjectKind::from_group_kind(kind.group(), kind.as_str()),
                Some(kind)
            );
            assert!(kind.api_version().starts_with(kind.group()));
        }
        assert_eq!(ObjectKind::from_group_kind("", "InferenceService"), None);
        assert_eq!(
            ObjectKind::from_group_kind("serving.kserve.io", "Namespace"),
            None
        );
        assert_eq!(ObjectKind::from_group_kind("", "Pod"), None);
    }
}
