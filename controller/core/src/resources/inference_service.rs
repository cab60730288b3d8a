//! KServe `InferenceService` (`serving.kserve.io/v1beta1`): the models users deploy.

use kube::CustomResource;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Annotation KServe sets on InferenceServices that run on ModelMesh.
pub const DEPLOYMENT_MODE_ANNOTATION: &str = "serving.kserve.io/deploymentMode";
/// The [`DEPLOYMENT_MODE_ANNOTATION`] value of ModelMesh.
pub const MODEL_MESH_MODE: &str = "ModelMesh";
/// Label naming the group an InferenceService belongs to (the ODH convention).
pub const GROUP_LABEL: &str = "serving.kserve.io/model-tag";
/// Annotation with the member's share of its group in percent.
pub const WEIGHT_ANNOTATION: &str = "serving.kserve.io/canaryTrafficPercent";
/// Annotation naming a request header that makes the group's choice sticky.
pub const STICKY_HEADER_ANNOTATION: &str = "modelsplit.io/sticky-header";

/// The predictor frameworks of KServe's older `spec.predictor.<framework>` form.
pub const FRAMEWORK_KEYS: &[&str] = &[
    "sklearn",
    "xgboost",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "huggingface",
    "pmml",
    "lightgbm",
    "paddle",
];

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "serving.kserve.io",
    version = "v1beta1",
    kind = "InferenceService",
    namespaced,
    status = "InferenceServiceStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
pub struct InferenceServiceSpec {
    #[serde(default)]
    pub predictor: PredictorSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictorSpec {
    /// The current form: `spec.predictor.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Everything else, including the older `spec.predictor.<framework>` form.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSpec {
    /// The ServingRuntime, when the user names one; else ModelMesh auto-selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_format: Option<ModelFormat>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelFormat {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InferenceServiceStatus {
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// A Knative-style condition (its `lastTransitionTime`, `reason`... may be absent).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl InferenceService {
    /// Whether KServe runs this InferenceService on ModelMesh.
    pub fn is_model_mesh(&self) -> bool {
        super::annotation(&self.metadata, DEPLOYMENT_MODE_ANNOTATION)
            .is_some_and(|mode| mode.trim().eq_ignore_ascii_case(MODEL_MESH_MODE))
    }

    /// The ServingRuntime named in `spec.predictor.model.runtime`.
    pub fn runtime_name(&self) -> Option<&str> {
        let runtime = self.spec.predictor.model.as_ref()?.runtime.as_deref()?;
        (!runtime.is_empty()).then_some(runtime)
    }

    /// The model format, from `spec.predictor.model.modelFormat.name` or the older
    /// `spec.predictor.<framework>` key; used to find an auto-selected runtime.
    pub fn model_format(&self) -> Option<&str> {
        let predictor = &self.spec.predictor;
        if let Some(format) = predictor
            .model
            .as_ref()
            .and_then(|m| m.model_format.as_ref())
        {
            if !format.name.is_empty() {
                return Some(&format.name);
            }
        }
        FRAMEWORK_KEYS
            .iter()
            .copied()
            .find(|key| predictor.other.contains_key(*key))
    }

    /// `false` only when the `Ready` condition says `False`: unknown counts as ready,
    /// so manifests without status (and isvcs still loading) are not held back.
    pub fn is_ready(&self) -> bool {
        let not_ready = self.status.as_ref().is_some_and(|status| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status.eq_ignore_ascii_case("false"))
        });
        !not_ready
    }

    /// The group this InferenceService is a member of, if any.
    pub fn group(&self) -> Option<&str> {
        super::label(&self.metadata, GROUP_LABEL).filter(|g| !g.is_empty())
    }

    /// The raw weight annotation.
    pub fn weight_annotation(&self) -> Option<&str> {
        super::annotation(&self.metadata, WEIGHT_ANNOTATION)
    }

    /// The raw sticky-header annotation.
    pub fn sticky_header_annotation(&self) -> Option<&str> {
        super::annotation(&self.metadata, STICKY_HEADER_ANNOTATION)
    }

    /// The raw rollout declaration ([`crate::rollout::ROLLOUT_ANNOTATION`]).
    pub fn rollout_annotation(&self) -> Option<&str> {
        super::annotation(&self.metadata, crate::rollout::ROLLOUT_ANNOTATION)
    }
}
