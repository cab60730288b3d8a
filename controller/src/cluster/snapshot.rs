//! What the watchers hold at one moment, and its translation into planner input.
//!
//! Inputs are watched as untyped objects and decoded one by one: an object the typed
//! model cannot read is logged and skipped instead of failing a whole watch.

use std::sync::Arc;

use kube::api::DynamicObject;
use serde::de::DeserializeOwned;

use super::apply::{ObjectKey, ObservedObjects};
use super::events::IsvcUids;
use super::kinds::ManagedKind;
use super::staging::{Published, PublishedConfig, PublishedModels, CONFIG_CHANGED_ANNOTATION};
use super::trim;
use modelsplit_core::planner::{Observed, PreviousConfigs};
use modelsplit_core::resources::wasm_plugin::WASM_PLUGIN_NAME;
use modelsplit_core::resources::{
    EnvoyFilter, InferenceService, Namespace, ServingRuntime, VirtualService, WasmPlugin,
};
use modelsplit_core::routing::modelmesh_host;
use modelsplit_core::settings::Delivery;
use modelsplit_filter::config::FilterConfig;

/// The watched objects at one moment. Objects are shared with the reflector stores, not
/// copied: a pass over 10,000 isvcs would otherwise copy them all.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub namespaces: Vec<Namespace>,
    pub serving_runtimes: Vec<Arc<DynamicObject>>,
    pub inference_services: Vec<Arc<DynamicObject>>,
    /// WasmPlugins, EnvoyFilters and VirtualServices labelled as managed by modelsplit.
    pub managed: ObservedObjects,
}

/// An input object that could not be read; reported and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub object: String,
    pub message: String,
}

impl Snapshot {
    /// Adds a watched WasmPlugin, EnvoyFilter or VirtualService under its key.
    pub fn insert_managed(&mut self, kind: ManagedKind, object: impl Into<Arc<DynamicObject>>) {
        let object = object.into();
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

    /// What instance `instance` has published: the filter configuration of each of its
    /// WasmPlugins or EnvoyFilters (last-known-good, and when it last changed) and the
    /// models each of its VirtualServices routes. Where a gateway has both (the delivery is
    /// being switched), the kind `delivery` publishes counts. A damaged one counts as absent
    /// (logged): its groups get no last good split.
    pub fn published(&self, instance: &str, delivery: Delivery) -> Published {
        let mut published = Published::default();
        let preferred = match delivery {
            Delivery::WasmPlugin => ManagedKind::WasmPlugin,
            Delivery::EnvoyFilter => ManagedKind::EnvoyFilter,
        };
        for (key, object) in &self.managed {
            if key.name != instance {
                continue;
            }
            if key.kind.carries_filter() {
                if key.kind != preferred
                    && has_key(&self.managed, preferred, &key.namespace, instance)
                {
                    continue;
                }
                match summarised_config(key.kind, object) {
                    Ok(config) => {
                        let changed_at = object
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(CONFIG_CHANGED_ANNOTATION))
                            .and_then(|t| t.parse().ok());
                        published.configs.insert(
                            key.namespace.clone(),
                            PublishedConfig { config, changed_at },
                        );
                    }
                    Err(error) => tracing::warn!(
                        object = %key,
                        %error,
                        "published filter configuration is unreadable; its groups have no last good split"
                    ),
                }
            } else {
                let models = trim::summarised_models(object)
                    .unwrap_or_else(|| virtual_service_models(object));
                if let Some(models) = models {
                    published.routes.insert(key.namespace.clone(), models);
                }
            }
        }
        published
    }

    /// Last-known-good filter configurations of the default instance (see [`Self::published`]).
    pub fn previous_configs(&self) -> PreviousConfigs {
        self.published(WASM_PLUGIN_NAME, Delivery::default())
            .configs
            .into_iter()
            .map(|(ns, p)| (ns, p.config))
            .collect()
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

fn has_key(managed: &ObservedObjects, kind: ManagedKind, namespace: &str, name: &str) -> bool {
    managed.contains_key(&ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// The filter configuration of a published WasmPlugin or EnvoyFilter, from its summary when
/// it was trimmed to one ([`trim::SUMMARY_KEY`]).
fn summarised_config(kind: ManagedKind, object: &DynamicObject) -> Result<FilterConfig, String> {
    trim::summarised_config(object).unwrap_or_else(|| published_config(kind, object))
}

/// The models a published VirtualService routes (None when it cannot be read).
pub(super) fn virtual_service_models(object: &DynamicObject) -> Option<PublishedModels> {
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let service = decode::<VirtualService>(object).ok()?;
    Some(routed_models(namespace, &service))
}

/// The filter configuration a WasmPlugin or EnvoyFilter carries.
pub(super) fn published_config(
    kind: ManagedKind,
    object: &DynamicObject,
) -> Result<FilterConfig, String> {
    match kind {
        ManagedKind::EnvoyFilter => decode::<EnvoyFilter>(object)
            .map_err(|e| e.to_string())
            .and_then(|filter| filter.filter_config().map_err(|e| e.to_string())),
        _ => decode::<WasmPlugin>(object)
            .map_err(|e| e.to_string())
            .and_then(|plugin| plugin.filter_config().map_err(|e| e.to_string())),
    }
}

fn decode<T: DeserializeOwned>(object: &DynamicObject) -> Result<T, serde_json::Error> {
    trim::unpack(object).and_then(serde_json::from_value)
}

fn decode_all<T: DeserializeOwned>(
    kind: &str,
    objects: &[Arc<DynamicObject>],
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

/// The models a VirtualService routes to its namespace's ModelMesh: from its REST routes'
/// exact URIs (`<prefix>/<ns>/v2/models/<model>`) and its gRPC routes' model header.
fn routed_models(namespace: &str, service: &VirtualService) -> PublishedModels {
    let mut models = PublishedModels::new();
    let own_host = modelmesh_host(namespace);
    let rest_marker = format!("/{namespace}/v2/models/");
    for route in &service.spec.http {
        if !route.route.iter().any(|r| r.destination.host == own_host) {
            continue;
        }
        for matched in &route.matches {
            if let Some(exact) = matched.uri.as_ref().and_then(|u| u.exact.as_deref()) {
                if let Some((_, model)) = exact.split_once(&rest_marker) {
                    if !model.is_empty() && !model.contains('/') {
                        models.entry(model.to_string()).or_insert(false);
                    }
                }
            }
            for value in matched.headers.values() {
                if let Some(model) = value.exact.as_deref() {
                    models.insert(model.to_string(), true);
                }
            }
        }
    }
    models
}

#[cfg(test)]
mod tests {
    use super::*;
    use modelsplit_core::encode::envoy_filter::envoy_filter;
    use modelsplit_core::settings::Settings;
    use modelsplit_filter::config::{GroupConfig, MemberConfig};

    fn config(one: u32) -> FilterConfig {
        let member = |name: &str, weight| MemberConfig {
            name: name.into(),
            weight,
        };
        FilterConfig {
            groups: vec![GroupConfig {
                namespace: "apps".into(),
                name: "ai-model".into(),
                members: vec![member("one", one), member("two", 10_000 - one)],
                grpc: true,
                sticky_header: None,
                observe: false,
            }],
            ..FilterConfig::default()
        }
    }

    fn dynamic(value: serde_json::Value) -> DynamicObject {
        serde_json::from_value(value).unwrap()
    }

    fn plugin(one: u32) -> WasmPlugin {
        WasmPlugin::for_gateway("istio-system", &config(one), &Settings::default())
    }

    #[test]
    fn the_delivered_kind_is_the_last_known_good_and_the_other_is_carried_over() {
        let mut snapshot = Snapshot::default();
        let as_plugin = dynamic(serde_json::to_value(plugin(8000)).unwrap());
        let as_filter = dynamic(serde_json::to_value(envoy_filter(&plugin(5000))).unwrap());
        snapshot.insert_managed(ManagedKind::WasmPlugin, as_plugin);

        // Only a WasmPlugin: its split is carried over whichever delivery runs now.
        for delivery in [Delivery::WasmPlugin, Delivery::EnvoyFilter] {
            let published = snapshot.published(WASM_PLUGIN_NAME, delivery);
            assert_eq!(published.configs["istio-system"].config, config(8000));
        }

        // Both (a switch under way): the kind being delivered counts.
        snapshot.insert_managed(ManagedKind::EnvoyFilter, as_filter);
        let published = snapshot.published(WASM_PLUGIN_NAME, Delivery::EnvoyFilter);
        assert_eq!(published.configs["istio-system"].config, config(5000));
        let published = snapshot.published(WASM_PLUGIN_NAME, Delivery::WasmPlugin);
        assert_eq!(published.configs["istio-system"].config, config(8000));
        // Another instance's objects are not this one's.
        assert!(snapshot
            .published("other", Delivery::EnvoyFilter)
            .configs
            .is_empty());
    }
}
