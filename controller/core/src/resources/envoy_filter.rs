//! Istio `EnvoyFilter` (`networking.istio.io/v1alpha3`): the other way to load the filter
//! (`--delivery envoyfilter`), for what a WasmPlugin cannot set. Only the fields modelsplit
//! writes and reads back are typed; the patches themselves are Envoy configuration, kept
//! as JSON (see [`crate::encode::envoy_filter`] for what they hold).

use kube::CustomResource;
use modelsplit_filter::config::{ConfigError, FilterConfig};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// `typed_config` type of Envoy's Wasm HTTP filter.
pub const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "networking.istio.io",
    version = "v1alpha3",
    kind = "EnvoyFilter",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct EnvoyFilterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<EnvoyFilterSelector>,
    #[serde(default)]
    pub config_patches: Vec<ConfigPatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EnvoyFilterSelector {
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One `configPatches` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigPatch {
    #[serde(default)]
    pub apply_to: String,
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<Value>,
    #[serde(default)]
    pub patch: Patch,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Patch {
    #[serde(default)]
    pub operation: String,
    #[serde(default)]
    pub value: Value,
}

/// Why an EnvoyFilter holds no readable filter configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvoyFilterError {
    #[error("no EXTENSION_CONFIG patch with a Wasm filter configuration string")]
    NoWasmConfiguration,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl EnvoyFilter {
    /// Size of the object as JSON, as sent to the API server.
    pub fn serialized_len(&self) -> usize {
        // Serialising plain strings, maps and JSON values cannot fail.
        serde_json::to_vec(self).map_or(0, |json| json.len())
    }

    /// The filter configuration this EnvoyFilter publishes (for last-known-good): the
    /// `configuration` string of the Wasm filter in its EXTENSION_CONFIG patch.
    pub fn filter_config(&self) -> Result<FilterConfig, EnvoyFilterError> {
        let text = self
            .spec
            .config_patches
            .iter()
            .filter(|p| p.apply_to == "EXTENSION_CONFIG")
            .find_map(|p| {
                let typed = p.patch.value.get("typed_config")?;
                if typed.get("@type")?.as_str()? != WASM_FILTER_TYPE {
                    return None;
                }
                typed
                    .pointer("/config/configuration/value")?
                    .as_str()
                    .map(str::to_owned)
            })
            .ok_or(EnvoyFilterError::NoWasmConfiguration)?;
        let config: FilterConfig =
            serde_json::from_str(&text).map_err(|e| ConfigError::Json(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }
}
