//! What the reflectors keep of each watched object: only what the planner reads, so the
//! controller's memory grows by little per InferenceService. Every object loses its
//! `managedFields` and `kubectl.kubernetes.io/last-applied-configuration` annotation;
//! InferenceServices keep of their spec the predictor's model runtime and format (and
//! which older `predictor.<framework>` key is there), of their status the conditions;
//! ServingRuntimes keep their supported formats, `multiModel` and `disabled`.
//!
//! Values are kept as they are (never coerced), so an object the planner could not read
//! untrimmed still cannot be read trimmed, with the same error.

use kube::api::{DynamicObject, ObjectMeta};
use serde_json::{Map, Value};

use modelsplit_core::resources::inference_service::FRAMEWORK_KEYS;

/// The annotation `kubectl apply` keeps a full copy of the object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the fields of `metadata` no one reads.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// Any object: metadata only.
pub fn object(object: &mut DynamicObject) {
    metadata(&mut object.metadata);
}

/// An InferenceService as the planner reads it.
pub fn inference_service(isvc: &mut DynamicObject) {
    metadata(&mut isvc.metadata);
    let Value::Object(data) = &mut isvc.data else {
        return;
    };
    data.retain(|key, _| key == "spec" || key == "status");
    if let Some(Value::Object(spec)) = data.get_mut("spec") {
        spec.retain(|key, _| key == "predictor");
        if let Some(Value::Object(predictor)) = spec.get_mut("predictor") {
            predictor.retain(|key, _| key == "model" || FRAMEWORK_KEYS.contains(&key.as_str()));
            for (key, value) in predictor.iter_mut() {
                if key == "model" {
                    if let Value::Object(model) = value {
                        model.retain(|key, _| key == "runtime" || key == "modelFormat");
                        if let Some(Value::Object(format)) = model.get_mut("modelFormat") {
                            format.retain(|key, _| key == "name");
                        }
                    }
                } else {
                    // Only its presence is read.
                    *value = Value::Object(Map::new());
                }
            }
        }
    }
    if let Some(Value::Object(status)) = data.get_mut("status") {
        status.retain(|key, _| key == "conditions");
        if let Some(Value::Array(conditions)) = status.get_mut("conditions") {
            for condition in conditions.iter_mut() {
                if let Value::Object(condition) = condition {
                    condition.retain(|key, _| {
                        matches!(key.as_str(), "type" | "status" | "reason" | "message")
                    });
                }
            }
        }
    }
}

/// A ServingRuntime as the planner reads it.
pub fn serving_runtime(runtime: &mut DynamicObject) {
    metadata(&mut runtime.metadata);
    let Value::Object(data) = &mut runtime.data else {
        return;
    };
    data.retain(|key, _| key == "spec");
    if let Some(Value::Object(spec)) = data.get_mut("spec") {
        spec.retain(|key, _| {
            matches!(
                key.as_str(),
                "supportedModelFormats" | "multiModel" | "disabled"
            )
        });
        if let Some(Value::Array(formats)) = spec.get_mut("supportedModelFormats") {
            for format in formats.iter_mut() {
                if let Value::Object(format) = format {
                    format.retain(|key, _| key == "name" || key == "autoSelect");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn an_inference_service_keeps_what_the_planner_reads() {
        let isvc = dynamic(json!({
            "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {
                "name": "a", "namespace": "apps", "uid": "u",
                "labels": {"modelsplit.io/group": "g"},
                "annotations": {
                    "modelsplit.io/weight": "70",
                    LAST_APPLIED_ANNOTATION: "{\"big\": true}",
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {
                "predictor": {
                    "model": {
                        "runtime": "ovms", "storageUri": "s3://x",
                        "modelFormat": {"name": "onnx", "version": "1"},
                    },
                    "sklearn": {"storageUri": "s3://y"},
                    "minReplicas": 1,
                },
                "transformer": {"containers": []},
            },
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "Loading",
                                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "modelStatus": {"states": {"activeModelState": "Loading"}},
                "url": "http://a",
            },
        }));
        let mut isvc = isvc;
        inference_service(&mut isvc);
        let trimmed = serde_json::to_value(isvc).unwrap();
        assert_eq!(
            trimmed,
            json!({
                "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                "metadata": {
                    "name": "a", "namespace": "apps", "uid": "u",
                    "labels": {"modelsplit.io/group": "g"},
                    "annotations": {"modelsplit.io/weight": "70"},
                },
                "spec": {"predictor": {
                    "model": {"runtime": "ovms", "modelFormat": {"name": "onnx"}},
                    "sklearn": {},
                }},
                "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Loading"}]},
            })
        );
    }

    #[test]
    fn a_serving_runtime_keeps_its_formats_and_switches() {
        let runtime = dynamic(json!({
            "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
            "metadata": {"name": "ovms", "namespace": "apps", "annotations": {"enable-route": "true"}},
            "spec": {
                "supportedModelFormats": [{"name": "onnx", "autoSelect": true, "version": "1"}],
                "multiModel": true,
                "containers": [{"name": "ovms", "image": "x", "args": ["--a"]}],
                "builtInAdapter": {"serverType": "ovms"},
            },
            "status": {"whatever": 1},
        }));
        let mut runtime = runtime;
        serving_runtime(&mut runtime);
        let trimmed = serde_json::to_value(runtime).unwrap();
        assert_eq!(
            trimmed,
            json!({
                "apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
                "metadata": {"name": "ovms", "namespace": "apps", "annotations": {"enable-route": "true"}},
                "spec": {
                    "supportedModelFormats": [{"name": "onnx", "autoSelect": true}],
                    "multiModel": true,
                },
            })
        );
    }
}
