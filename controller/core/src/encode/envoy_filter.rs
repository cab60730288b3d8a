//! A gateway's WasmPlugin as an `EnvoyFilter` (`--delivery envoyfilter`): the same module,
//! configuration, selector and failure policy, written as the Envoy configuration istiod
//! makes of a WasmPlugin (an ECDS filter, fetched by istio-agent), plus
//! `allow_on_headers_stop_iteration: true`, which no WasmPlugin field sets and which gRPC
//! calls naming the group in `model_name` need.
//!
//! Two patches: EXTENSION_CONFIG adds the Wasm filter configuration under a name of its
//! own; HTTP_FILTER puts a filter that takes that configuration from istiod (ECDS) first in
//! every HTTP filter chain of the gateway, so that it runs before routing, as the
//! WasmPlugin's phase AUTHN does. A configuration change is one ECDS update: no listener
//! is rebuilt, no connection drained.

use crate::resources::envoy_filter::{
    ConfigPatch, EnvoyFilterSelector, EnvoyFilterSpec, Patch, WASM_FILTER_TYPE,
};
use crate::resources::wasm_plugin::PluginConfig;
use crate::resources::{EnvoyFilter, WasmPlugin};
use serde_json::{json, Value};

/// `typed_config` type istio-agent swaps in when the module cannot be fetched (an RBAC
/// filter that allows or denies everything, as the failure policy says); the filter's
/// config discovery must accept it.
const RBAC_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";

/// The EnvoyFilter that loads what `plugin` loads, named and labelled as it is.
pub fn envoy_filter(plugin: &WasmPlugin) -> EnvoyFilter {
    let namespace = plugin.metadata.namespace.clone().unwrap_or_default();
    let name = plugin.metadata.name.clone().unwrap_or_default();
    let spec = &plugin.spec;
    let extension = extension_name(&namespace, &name);
    let configuration = match &spec.plugin_config {
        Some(PluginConfig::Filter(config)) => serde_json::to_string(config),
        Some(PluginConfig::Other(value)) => serde_json::to_string(value),
        None => Ok("{}".to_string()),
    }
    .unwrap_or_else(|_| "{}".to_string()); // plain data: serialising cannot fail
    let failure_policy = match spec.fail_strategy.as_deref() {
        Some("FAIL_CLOSE") => "FAIL_CLOSED",
        _ => "FAIL_OPEN",
    };
    let wasm = json!({
        "name": extension,
        "typed_config": {
            "@type": WASM_FILTER_TYPE,
            "config": {
                "name": format!("{namespace}.{name}"),
                "vm_config": {
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": code(&spec.url, spec.sha256.as_deref()),
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                "failure_policy": failure_policy,
                // Hold a gRPC call's headers while the filter reads `model_name` from the
                // first message (Envoy 1.35+).
                "allow_on_headers_stop_iteration": true,
            },
        },
    });
    let http_filter = json!({
        "name": extension,
        "config_discovery": {
            // As istiod does for WasmPlugins: the listener waits for the filter's
            // configuration instead of starting without it.
            "config_source": {"ads": {}, "initial_fetch_timeout": "0s"},
            "type_urls": [WASM_FILTER_TYPE, RBAC_FILTER_TYPE],
        },
    });
    let mut filter = EnvoyFilter::new(
        &name,
        EnvoyFilterSpec {
            workload_selector: spec.selector.as_ref().map(|s| EnvoyFilterSelector {
                labels: s.match_labels.clone(),
            }),
            config_patches: vec![
                ConfigPatch {
                    apply_to: "EXTENSION_CONFIG".to_string(),
                    matches: None,
                    patch: Patch {
                        operation: "ADD".to_string(),
                        value: wasm,
                    },
                },
                ConfigPatch {
                    apply_to: "HTTP_FILTER".to_string(),
                    matches: Some(json!({
                        "context": "GATEWAY",
                        "listener": {"filterChain": {"filter": {
                            "name": "envoy.filters.network.http_connection_manager"
                        }}},
                    })),
                    patch: Patch {
                        operation: "INSERT_FIRST".to_string(),
                        value: http_filter,
                    },
                },
            ],
        },
    );
    filter.metadata.namespace = plugin.metadata.namespace.clone();
    filter.metadata.labels = plugin.metadata.labels.clone();
    filter.metadata.annotations = plugin.metadata.annotations.clone();
    filter
}

/// The ECDS name of the filter: one per EnvoyFilter, apart from the names istiod gives
/// WasmPlugins, so that both can be on a gateway while the delivery is switched.
pub fn extension_name(namespace: &str, name: &str) -> String {
    format!("modelsplit/{namespace}/{name}")
}

/// Where Envoy gets the module, as istiod writes it for a WasmPlugin's `url`: a file
/// path for `file://`, else a remote source that istio-agent fetches (http, https, and
/// OCI images, the default scheme) and hands Envoy as a local file; cluster `_` because
/// Envoy itself never fetches it.
fn code(url: &str, sha256: Option<&str>) -> Value {
    if let Some(path) = url.strip_prefix("file://") {
        return json!({"local": {"filename": path}});
    }
    let uri = if url.contains("://") {
        url.to_string()
    } else {
        format!("oci://{url}")
    };
    let mut remote = json!({
        "http_uri": {"uri": uri, "cluster": "_", "timeout": "30s"},
    });
    if let Some(sha) = sha256 {
        remote["sha256"] = json!(sha);
    }
    json!({ "remote": remote })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{FailStrategy, Settings};
    use modelsplit_filter::config::{FilterConfig, GroupConfig, MemberConfig};

    fn config() -> FilterConfig {
        let mut config = FilterConfig::default();
        config.groups.push(GroupConfig {
            namespace: "modelmesh-apps".into(),
            name: "ai-model".into(),
            members: vec![
                MemberConfig {
                    name: "ai-model-one".into(),
                    weight: 8000,
                },
                MemberConfig {
                    name: "ai-model-two".into(),
                    weight: 2000,
                },
            ],
            grpc: true,
            sticky_header: None,
            observe: false,
        });
        config
    }

    fn plugin(settings: &Settings) -> WasmPlugin {
        WasmPlugin::for_gateway("istio-system", &config(), settings)
    }

    #[test]
    fn carries_the_wasm_plugins_module_configuration_and_selector() {
        let settings = Settings {
            url: "https://example.com/filter.wasm".into(),
            sha256: Some("ab".repeat(32)),
            ..Settings::default()
        };
        let filter = envoy_filter(&plugin(&settings));
        assert_eq!(filter.metadata.name.as_deref(), Some("modelsplit"));
        assert_eq!(filter.metadata.namespace.as_deref(), Some("istio-system"));
        assert_eq!(filter.metadata.labels, plugin(&settings).metadata.labels);
        let labels = &filter.spec.workload_selector.as_ref().unwrap().labels;
        assert_eq!(
            labels.get("istio").map(String::as_str),
            Some("ingressgateway")
        );
        assert_eq!(filter.filter_config().unwrap(), config());

        let json = serde_json::to_value(&filter).unwrap();
        let patches = &json["spec"]["configPatches"];
        let wasm = &patches[0]["patch"]["value"];
        assert_eq!(patches[0]["applyTo"], "EXTENSION_CONFIG");
        assert_eq!(patches[0]["patch"]["operation"], "ADD");
        let config = &wasm["typed_config"]["config"];
        assert_eq!(config["allow_on_headers_stop_iteration"], true);
        assert_eq!(config["failure_policy"], "FAIL_OPEN");
        let remote = &config["vm_config"]["code"]["remote"];
        assert_eq!(remote["http_uri"]["uri"], "https://example.com/filter.wasm");
        assert_eq!(remote["sha256"], "ab".repeat(32));
        // The HTTP filter takes exactly that configuration by name, first in the chain.
        assert_eq!(patches[1]["applyTo"], "HTTP_FILTER");
        assert_eq!(patches[1]["patch"]["operation"], "INSERT_FIRST");
        assert_eq!(patches[1]["match"]["context"], "GATEWAY");
        assert_eq!(patches[1]["patch"]["value"]["name"], wasm["name"]);
        assert_eq!(wasm["name"], "modelsplit/istio-system/modelsplit");
        // Read back from the cluster as written.
        let back: EnvoyFilter = serde_json::from_value(json).unwrap();
        assert_eq!(back, filter);
    }

    #[test]
    fn file_urls_are_local_files_and_bare_images_are_oci() {
        let settings = Settings {
            url: "file:///var/lib/filter.wasm".into(),
            ..Settings::default()
        };
        let json = serde_json::to_value(envoy_filter(&plugin(&settings))).unwrap();
        let code = &json["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            ["vm_config"]["code"];
        assert_eq!(code["local"]["filename"], "/var/lib/filter.wasm");

        let settings = Settings {
            url: "quay.io/me/filter:1".into(),
            ..Settings::default()
        };
        let json = serde_json::to_value(envoy_filter(&plugin(&settings))).unwrap();
        let code = &json["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
            ["vm_config"]["code"];
        assert_eq!(
            code["remote"]["http_uri"]["uri"],
            "oci://quay.io/me/filter:1"
        );
        assert!(code["remote"].get("sha256").is_none());
    }

    #[test]
    fn fail_close_is_envoys_fail_closed() {
        let settings = Settings {
            fail_strategy: FailStrategy::FailClose,
            ..Settings::default()
        };
        let json = serde_json::to_value(envoy_filter(&plugin(&settings))).unwrap();
        let config = &json["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"];
        assert_eq!(config["failure_policy"], "FAIL_CLOSED");
    }

    #[test]
    fn a_filter_without_a_readable_configuration_says_so() {
        let mut filter = envoy_filter(&plugin(&Settings::default()));
        filter.spec.config_patches[0].patch.value["typed_config"]["config"]["configuration"]
            ["value"] = json!("{\"groups\": 7}");
        assert!(filter.filter_config().is_err());
        filter.spec.config_patches.remove(0);
        assert!(filter.filter_config().is_err());
    }
}
