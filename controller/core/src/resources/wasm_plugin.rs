//! Istio `WasmPlugin` (`extensions.istio.io/v1alpha1`): loads the filter into the gateway.

use crate::settings::Settings;
use kube::CustomResource;
use modelsplit_filter::config::{ConfigError, FilterConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the one WasmPlugin per gateway workload namespace.
pub const WASM_PLUGIN_NAME: &str = "modelsplit";

/// Largest serialised WasmPlugin the planner publishes, in bytes. The API server
/// refuses requests above 1.5 MiB (1,572,864 bytes, the etcd object limit); the rest
/// is room for what the server adds (metadata, managedFields, annotations).
pub const MAX_WASM_PLUGIN_BYTES: usize = 1_400_000;

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "extensions.istio.io",
    version = "v1alpha1",
    kind = "WasmPlugin",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A Secret in the WasmPlugin's namespace with the registry credentials for `oci://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<PluginConfig>,
}

/// `spec.pluginConfig`: the filter configuration, or whatever else is there (kept as
/// JSON so a foreign or damaged config never stops a watcher from reading the object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PluginConfig {
    Filter(FilterConfig),
    Other(serde_json::Value),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl WasmPlugin {
    /// Size of the object as JSON, as sent to the API server.
    pub fn serialized_len(&self) -> usize {
        // Serialising plain strings, maps and numbers cannot fail.
        serde_json::to_vec(self).map_or(0, |json| json.len())
    }

    /// The filter configuration this plugin publishes (for last-known-good).
    pub fn filter_config(&self) -> Result<FilterConfig, ConfigError> {
        let config = match &self.spec.plugin_config {
            None => FilterConfig::default(),
            Some(PluginConfig::Filter(config)) => config.clone(),
            // Re-parse to get the serde message naming what does not fit.
            Some(PluginConfig::Other(value)) => serde_json::from_value(value.clone())
                .map_err(|e| ConfigError::Json(e.to_string()))?,
        };
        config.validate()?;
        Ok(config)
    }
}

impl WasmPlugin {
    /// The WasmPlugin that loads the filter with `config` into the gateway workload
    /// of `namespace`.
    pub fn for_gateway(namespace: &str, config: &FilterConfig, settings: &Settings) -> WasmPlugin {
        let mut plugin = WasmPlugin::new(
            WASM_PLUGIN_NAME,
            WasmPluginSpec {
                selector: Some(WorkloadSelector {
                    match_labels: settings.selector.clone(),
                }),
                url: settings.url.clone(),
                sha256: settings.sha256.clone(),
                image_pull_secret: settings.image_pull_secret.clone(),
                // Before routing: the rewritten request is routed as the member.
                phase: Some("AUTHN".to_string()),
                fail_strategy: Some(settings.fail_strategy.as_istio().to_string()),
                plugin_config: Some(PluginConfig::Filter(config.clone())),
            },
        );
        plugin.metadata.namespace = Some(namespace.to_string());
        plugin.metadata.labels = Some(super::managed_labels());
        plugin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_pull_secret_is_set_only_when_given() {
        let config = FilterConfig::default();
        let plain = WasmPlugin::for_gateway("istio-system", &config, &Settings::default());
        let json = serde_json::to_value(&plain).unwrap();
        assert!(json["spec"].get("imagePullSecret").is_none(), "{json}");

        let settings = Settings {
            image_pull_secret: Some("registry-pull".to_string()),
            ..Settings::default()
        };
        let plugin = WasmPlugin::for_gateway("istio-system", &config, &settings);
        let json = serde_json::to_value(&plugin).unwrap();
        assert_eq!(json["spec"]["imagePullSecret"], "registry-pull");
        // Read back from the cluster as written.
        let back: WasmPlugin = serde_json::from_value(json).unwrap();
        assert_eq!(back, plugin);
    }
}
