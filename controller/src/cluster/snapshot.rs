//! What the watchers hold at one moment, and its translation into planner input.
//!
//! Inputs are watched as untyped objects and decoded one by one: an object the typed
//! model cannot read is logged and skipped instead of failing a whole watch.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use super::apply::{ObjectKey, ObservedObjects};
use super::events::IsvcUids;
use super::kinds::ManagedKind;
use crate::planner::{Observed, PreviousConfigs};
use crate::resources::wasm_plugin::WASM_PLUGIN_NAME;
use crate::resources::{InferenceService, Namespace, ServingRuntime, WasmPlugin};

/// The watched objects at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Namespace>,
    pub serving_runtimes: Vec<DynamicObject>,
    pub inference_services: Vec<DynamicObject>,
    /// WasmPlugins and VirtualServices labelled as managed by modelsplit.
    pub managed: ObservedObjects,
}

/// An input object that could not be read; reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub object: String,
    pub message: String,
}

impl Snapshot {
    /// Adds a watched WasmPlugin or VirtualService under its key.
    pub fn insert_managed(&mut self, kind: ManagedKind, object: DynamicObject) {
        let key = ObjectKey {
            kind,
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone().unwrap_or_default(),
        };
        self.managed.insert(key, object);
    }

    /// The planner's input; objects that do not decode are returned beside it.
    pub fn observed(&self) -> (Observed, Vec<DecodeError>) {
        let mut errors = Vec::new();
        let observed = Observed {
            namespaces: self.namespaces.clone(),
            serving_runtimes: decode_all::<ServingRuntime>(
                "ServingRuntime",
                &self.serving_runtimes,
                &mut errors,
            ),
            inference_services: decode_all::<InferenceService>(
                "InferenceService",
                &self.inference_services,
                &mut errors,
            ),
        };
        (observed, errors)
    }

    /// Last-known-good: the filter configuration each published WasmPlugin carries. A
    /// damaged one counts as absent (logged): its groups get no last good split.
    pub fn previous_configs(&self) -> PreviousConfigs {
        let mut previous = BTreeMap::new();
        for (key, object) in &self.managed {
            if key.kind != ManagedKind::WasmPlugin || key.name != WASM_PLUGIN_NAME {
                continue;
            }
            let config = decode::<WasmPlugin>(object)
                .map_err(|e| e.to_string())
                .and_then(|plugin| plugin.filter_config().map_err(|e| e.to_string()));
            match config {
                Ok(config) => {
                    previous.insert(key.namespace.clone(), config);
                }
                Err(error) => tracing::warn!(
                    object = %key,
                    %error,
                    "published pluginConfig is unreadable; its groups have no last good split"
                ),
            }
        }
        previous
    }

    /// uid of each InferenceService, for Event references.
    pub fn isvc_uids(&self) -> IsvcUids {
        self.inference_services
            .iter()
            .filter_map(|o| {
                let meta = &o.metadata;
                Some((
                    (meta.namespace.clone()?, meta.name.clone()?),
                    meta.uid.clone()?,
                ))
            })
            .collect()
    }
}

fn decode<T: DeserializeOwned>(object: &DynamicObject) -> Result<T, serde_json::Error> {
    serde_json::to_value(object).and_then(serde_json::from_value)
}

fn decode_all<T: DeserializeOwned>(
    kind: &str,
    objects: &[DynamicObject],
    errors: &mut Vec<DecodeError>,
) -> Vec<T> {
    let mut typed = Vec::with_capacity(objects.len());
    for object in objects {
        match decode::<T>(object) {
            Ok(value) => typed.push(value),
            Err(error) => errors.push(DecodeError {
                object: format!(
                    "{kind} {}/{}",
                    object.metadata.namespace.as_deref().unwrap_or(""),
                    object.metadata.name.as_deref().unwrap_or("")
                ),
                message: error.to_string(),
            }),
        }
    }
    typed
}
