//! KServe `ServingRuntime` (`serving.kserve.io/v1alpha1`): where ModelMesh loads models.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Annotation that opts a runtime's InferenceServices into gateway routes (ODH convention).
pub const ENABLE_ROUTE_ANNOTATION: &str = "enable-route";

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "serving.kserve.io",
    version = "v1alpha1",
    kind = "ServingRuntime",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct ServingRuntimeSpec {
    #[serde(default)]
    pub supported_model_formats: Vec<SupportedModelFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_model: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedModelFormat {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_select: Option<bool>,
}

impl ServingRuntime {
    /// Whether the runtime carries `enable-route: "true"`.
    pub fn enables_route(&self) -> bool {
        super::annotation(&self.metadata, ENABLE_ROUTE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Whether ModelMesh would pick this runtime for a model of `format` that names
    /// no runtime: enabled, multi-model, and the format marked `autoSelect`.
    pub fn auto_selects(&self, format: &str) -> bool {
        self.spec.disabled != Some(true)
            && self.spec.multi_model == Some(true)
            && self
                .spec
                .supported_model_formats
                .iter()
                .any(|f| f.auto_select == Some(true) && f.name.eq_ignore_ascii_case(format))
    }
}
