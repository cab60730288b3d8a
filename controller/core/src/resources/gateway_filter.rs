//! The object that loads the filter into one gateway workload: the WasmPlugin the planner
//! makes, or the same as an EnvoyFilter, as [`Delivery`] says. `render`, `run` and the size
//! limit all look at this, so what is measured is what is published.

use super::{EnvoyFilter, WasmPlugin};
use crate::encode::envoy_filter::envoy_filter;
use crate::settings::Delivery;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum GatewayFilter {
    WasmPlugin(Box<WasmPlugin>),
    EnvoyFilter(Box<EnvoyFilter>),
}

impl GatewayFilter {
    /// `plugin` as `delivery` publishes it.
    pub fn deliver(plugin: WasmPlugin, delivery: Delivery) -> GatewayFilter {
        match delivery {
            Delivery::WasmPlugin => GatewayFilter::WasmPlugin(Box::new(plugin)),
            Delivery::EnvoyFilter => GatewayFilter::EnvoyFilter(Box::new(envoy_filter(&plugin))),
        }
    }

    /// The size `plugin` has as `delivery` publishes it, without copying a WasmPlugin (the
    /// planner measures every gateway's on every pass; its config is 1 MB at 10,000 isvcs).
    pub fn published_len(plugin: &WasmPlugin, delivery: Delivery) -> usize {
        match delivery {
            Delivery::WasmPlugin => plugin.serialized_len(),
            Delivery::EnvoyFilter => envoy_filter(plugin).serialized_len(),
        }
    }

    /// The `kind` field.
    pub fn kind(&self) -> &'static str {
        match self {
            GatewayFilter::WasmPlugin(_) => "WasmPlugin",
            GatewayFilter::EnvoyFilter(_) => "EnvoyFilter",
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            GatewayFilter::WasmPlugin(plugin) => &plugin.metadata,
            GatewayFilter::EnvoyFilter(filter) => &filter.metadata,
        }
    }

    /// Size of the object as JSON, as sent to the API server.
    pub fn serialized_len(&self) -> usize {
        match self {
            GatewayFilter::WasmPlugin(plugin) => plugin.serialized_len(),
            GatewayFilter::EnvoyFilter(filter) => filter.serialized_len(),
        }
    }

    /// The object as JSON, as applied.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            GatewayFilter::WasmPlugin(plugin) => serde_json::to_value(plugin),
            GatewayFilter::EnvoyFilter(filter) => serde_json::to_value(filter),
        }
    }
}

impl serde::Serialize for GatewayFilter {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            GatewayFilter::WasmPlugin(plugin) => plugin.serialize(serializer),
            GatewayFilter::EnvoyFilter(filter) => filter.serialize(serializer),
        }
    }
}
