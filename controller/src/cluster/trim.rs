//! What the reflectors keep of each watched object: only what the planner reads, so the
//! controller's memory grows by little per InferenceService. Every object loses its
//! `managedFields` and `kubectl.kubernetes.io/last-applied-configuration` annotation;
//! InferenceServices keep of their spec the predictor's model runtime and format (and
//! which older `predictor.<framework>` key is there), of their status the conditions;
//! ServingRuntimes keep their supported formats, `multiModel` and `disabled`; both are then
//! kept as JSON text ([`pack`]). The controller's own published objects, watched back, keep
//! a summary instead of their spec ([`SUMMARY_KEY`]).
//!
//! Values are kept as they are (never coerced), so an object the planner could not read
//! untrimmed still cannot be read trimmed, with the same error.
//!
//! Measured with heaptrack at 3,000 isvcs (`scripts/bench.sh cluster-scale` with
//! MODELSPLIT_SCALE_N=3000): peak heap 108 MiB before the summaries, packing and the lazily
//! built VirtualServices of [`super::apply::Writer::apply_each`], 39 MiB after.

use kube::api::{DynamicObject, ObjectMeta};
use serde_json::{json, Map, Value};

use super::apply::spec_digest;
use super::kinds::ManagedKind;
use super::snapshot;
use super::staging::PublishedModels;
use modelsplit_core::resources::inference_service::FRAMEWORK_KEYS;
use modelsplit_filter::config::FilterConfig;
use serde::Deserialize;

/// Where a published object watched back keeps, instead of its spec, what the controller
/// reads of it: the spec's digest (to tell whether a write would change it) and, for a
/// VirtualService, the models it routes, for a WasmPlugin or EnvoyFilter, its filter
/// configuration as compact JSON. A watched-back spec as untyped JSON is many times the
/// size of its text; at 10,000 isvcs the 200 VirtualServices alone are 12 MB of it.
pub const SUMMARY_KEY: &str = "modelsplitSummary";

// The summary's fields; written and read only here.
const DIGEST: &str = "specDigest";
const ROUTED_MODELS: &str = "routedModels";
const FILTER_CONFIG: &str = "filterConfig";
const FILTER_CONFIG_ERROR: &str = "filterConfigError";

/// The summary of a trimmed published object, if it is one.
pub fn summary(object: &DynamicObject) -> Option<&Map<String, Value>> {
    object.data.get(SUMMARY_KEY)?.as_object()
}

/// The digest of a summarised object's spec ([`spec_digest`]); None when not summarised.
pub fn summarised_digest(object: &DynamicObject) -> Option<&str> {
    summary(object)?.get(DIGEST)?.as_str()
}

/// The filter configuration a summarised WasmPlugin or EnvoyFilter carries, or why it
/// cannot be read; None when the object was not summarised.
pub fn summarised_config(object: &DynamicObject) -> Option<Result<FilterConfig, String>> {
    let summary = summary(object)?;
    if let Some(error) = summary.get(FILTER_CONFIG_ERROR) {
        return Some(Err(error.as_str().unwrap_or("unreadable").to_string()));
    }
    let config = match summary.get(FILTER_CONFIG).and_then(Value::as_str) {
        Some(text) => FilterConfig::from_json(text.as_bytes()).map_err(|e| e.to_string()),
        None => Err("no filter configuration in the summary".to_string()),
    };
    Some(config)
}

/// The models a summarised VirtualService routes (the inner None: it could not be read);
/// None when the object was not summarised.
pub fn summarised_models(object: &DynamicObject) -> Option<Option<PublishedModels>> {
    let summary = summary(object)?;
    Some(
        summary
            .get(ROUTED_MODELS)
            .and_then(|models| PublishedModels::deserialize(models).ok()),
    )
}

/// The annotation `kubectl apply` keeps a full copy of the object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the fields of `metadata` no one reads.
pub fn metadata(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

/// A published object of `kind`, watched back: metadata and its summary ([`SUMMARY_KEY`]).
pub fn published(kind: ManagedKind) -> fn(&mut DynamicObject) {
    match kind {
        ManagedKind::WasmPlugin => published_wasm_plugin,
        ManagedKind::EnvoyFilter => published_envoy_filter,
        ManagedKind::VirtualService => published_virtual_service,
    }
}

fn published_wasm_plugin(object: &mut DynamicObject) {
    summarise_filter_carrier(ManagedKind::WasmPlugin, object);
}

fn published_envoy_filter(object: &mut DynamicObject) {
    summarise_filter_carrier(ManagedKind::EnvoyFilter, object);
}

fn summarise_filter_carrier(kind: ManagedKind, object: &mut DynamicObject) {
    metadata(&mut object.metadata);
    let mut summary = Map::new();
    summary.insert(DIGEST.into(), json!(spec_digest(spec(object))));
    match snapshot::published_config(kind, object) {
        Ok(config) => {
            let text = serde_json::to_string(&config).unwrap_or_default();
            summary.insert(FILTER_CONFIG.into(), json!(text));
        }
        Err(error) => {
            summary.insert(FILTER_CONFIG_ERROR.into(), json!(error));
        }
    }
    object.data = json!({ SUMMARY_KEY: summary });
}

fn published_virtual_service(object: &mut DynamicObject) {
    metadata(&mut object.metadata);
    let mut summary = Map::new();
    summary.insert(DIGEST.into(), json!(spec_digest(spec(object))));
    if let Some(models) = snapshot::virtual_service_models(object) {
        summary.insert(ROUTED_MODELS.into(), json!(models));
    }
    object.data = json!({ SUMMARY_KEY: summary });
}

fn spec(object: &DynamicObject) -> &Value {
    object.data.get("spec").unwrap_or(&Value::Null)
}

/// An InferenceService as the planner reads it, packed ([`pack`]).
pub fn inference_service(isvc: &mut DynamicObject) {
    inference_service_fields(isvc);
    pack(isvc);
}

/// A ServingRuntime as the planner reads it, packed ([`pack`]).
pub fn serving_runtime(runtime: &mut DynamicObject) {
    serving_runtime_fields(runtime);
    pack(runtime);
}

/// Replaces what is left of an object's body by its JSON text (`data` becomes a string):
/// as a JSON value, every nested object is a B-tree node of about 600 bytes, about 14 KB
/// per trimmed InferenceService; as text, a few hundred bytes. [`unpack`] gives back the
/// object exactly as it was, so decoding it fails or succeeds as before.
pub fn pack(object: &mut DynamicObject) {
    if object.data.is_object() {
        let text = object.data.to_string();
        object.data = Value::String(text);
    }
}

/// The object as JSON, whether packed or not.
pub fn unpack(object: &DynamicObject) -> Result<Value, serde_json::Error> {
    let Value::String(text) = &object.data else {
        return serde_json::to_value(object);
    };
    let mut value: Value = serde_json::from_str(text)?;
    if let Value::Object(map) = &mut value {
        if let Some(types) = &object.types {
            map.insert(
                "apiVersion".into(),
                Value::String(types.api_version.clone()),
            );
            map.insert("kind".into(), Value::String(types.kind.clone()));
        }
        map.insert("metadata".into(), serde_json::to_value(&object.metadata)?);
    }
    Ok(value)
}

/// The fields of an InferenceService the planner reads.
fn inference_service_fields(isvc: &mut DynamicObject) {
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

/// The fields of a ServingRuntime the planner reads.
fn serving_runtime_fields(runtime: &mut DynamicObject) {
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
        assert!(isvc.data.is_string(), "packed");
        let trimmed = unpack(&isvc).unwrap();
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
        let trimmed = unpack(&runtime).unwrap();
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

    #[test]
    fn a_published_virtual_service_keeps_its_digest_and_routed_models_only() {
        let spec = json!({
            "gateways": ["istio-system/odh-gateway"], "hosts": ["*"],
            "http": [{
                "match": [{"uri": {"exact": "/modelmesh/apps/v2/models/one"}}],
                "route": [{"destination": {"host": "modelmesh-serving.apps.svc.cluster.local", "port": {"number": 8008}}}],
            }, {
                "match": [{"headers": {"mm-vmodel-id": {"exact": "one"}}}],
                "route": [{"destination": {"host": "modelmesh-serving.apps.svc.cluster.local", "port": {"number": 8033}}}],
            }],
        });
        let full = dynamic(json!({
            "apiVersion": "networking.istio.io/v1beta1", "kind": "VirtualService",
            "metadata": {"name": "modelsplit", "namespace": "apps",
                         "managedFields": [{"manager": "modelsplit"}]},
            "spec": spec,
        }));
        let mut trimmed = full.clone();
        published(ManagedKind::VirtualService)(&mut trimmed);
        assert_eq!(
            summarised_models(&trimmed),
            Some(Some(PublishedModels::from([("one".to_string(), true)])))
        );
        assert!(trimmed.data.get("spec").is_none());
        assert!(trimmed.metadata.managed_fields.is_none());
        // The same spec (numbers written as floats too) is unchanged; another is not.
        let mut desired = serde_json::to_value(&full).unwrap();
        desired["spec"]["http"][0]["route"][0]["destination"]["port"]["number"] = json!(8008.0);
        assert!(super::super::apply::is_unchanged(&desired, &trimmed));
        assert!(super::super::apply::is_unchanged(&desired, &full));
        desired["spec"]["hosts"] = json!(["other"]);
        assert!(!super::super::apply::is_unchanged(&desired, &trimmed));
        assert!(!super::super::apply::is_unchanged(&desired, &full));
    }

    #[test]
    fn a_published_wasm_plugin_keeps_its_filter_configuration_as_text() {
        let config = json!({"groups": [{"namespace": "apps", "name": "g", "members": [
            {"name": "one", "weight": 8000}, {"name": "two", "weight": 2000}]}]});
        let mut plugin = dynamic(json!({
            "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "modelsplit", "namespace": "istio-system"},
            "spec": {"url": "oci://x", "pluginConfig": config},
        }));
        published(ManagedKind::WasmPlugin)(&mut plugin);
        let parsed = summarised_config(&plugin).expect("a summary").unwrap();
        assert_eq!(parsed.groups[0].members[0].weight, 8000);

        let mut damaged = dynamic(json!({
            "apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
            "metadata": {"name": "modelsplit", "namespace": "istio-system"},
            "spec": {"url": "oci://x", "pluginConfig": {"groups": 7}},
        }));
        published(ManagedKind::WasmPlugin)(&mut damaged);
        assert!(matches!(summarised_config(&damaged), Some(Err(_))));
    }
}
