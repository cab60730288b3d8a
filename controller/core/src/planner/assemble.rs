//! The plan's outputs: routes per namespace, a filter configuration per gateway
//! workload, and its WasmPlugin within the API server's size limit.

use super::grpc_names::Owners;
use super::mesh::namespace_notice;
use super::{
    GatewayPlan, MeshNamespace, Model, PreviousConfigs, GATEWAY_ANNOTATION, MAISTRA_GATEWAY_NAME,
    MAISTRA_GATEWAY_NAMESPACE,
};
use crate::report::{GroupReport, Notice, NoticeReason, OversizedPlugin};
use crate::resources::wasm_plugin::MAX_WASM_PLUGIN_BYTES;
use crate::resources::{GatewayFilter, ObjectKind, WasmPlugin};
use crate::routing::{ExposedModel, NamespaceRoutes};
use crate::settings::Settings;
use modelsplit_filter::config::FilterConfig;
use std::collections::BTreeMap;

/// The routes of each mesh namespace; models that lose their gRPC name get a notice.
pub(super) fn namespace_routes(
    mesh: &BTreeMap<String, MeshNamespace>,
    models: &BTreeMap<(&str, &str), Model>,
    owners: &Owners,
    notices: &mut Vec<Notice>,
) -> Vec<NamespaceRoutes> {
    let mut routes: BTreeMap<&str, NamespaceRoutes> = BTreeMap::new();
    for model in models.values().filter(|m| m.exposure.is_ok()) {
        let Some(mesh_ns) = mesh.get(model.namespace) else {
            continue; // exposed implies a mesh namespace
        };
        let owner = owners
            .get(&mesh_ns.plugin_namespace)
            .and_then(|owners| owners.get(model.name))
            .map_or(model.namespace, String::as_str);
        let grpc = owner == model.namespace;
        if !grpc {
            notices.push(Notice {
                kind: ObjectKind::InferenceService,
                reason: NoticeReason::Planner,
                namespace: model.namespace.to_string(),
                name: model.name.to_string(),
                message: format!(
                    "no gRPC route: the name is used for gRPC by namespace {owner} on the same gateway (older claim); REST still works"
                ),
            });
        }
        routes
            .entry(model.namespace)
            .or_insert_with(|| NamespaceRoutes {
                namespace: model.namespace.to_string(),
                gateway: mesh_ns.gateway.clone(),
                plugin_namespace: mesh_ns.plugin_namespace.clone(),
                rest_prefix: String::new(), // set once the gateway's config is known
                models: Vec::new(),
            })
            .models
            .push(ExposedModel {
                name: model.name.to_string(),
                grpc,
            });
    }
    routes.into_values().collect()
}

/// One filter configuration per gateway workload namespace, groups sorted.
pub(super) fn gateway_plans(
    mesh: &BTreeMap<String, MeshNamespace>,
    reports: &[GroupReport],
) -> Vec<GatewayPlan> {
    let mut plans: BTreeMap<&str, GatewayPlan> = BTreeMap::new();
    for mesh_ns in mesh.values() {
        let plan = plans
            .entry(mesh_ns.plugin_namespace.as_str())
            .or_insert_with(|| GatewayPlan {
                plugin_namespace: mesh_ns.plugin_namespace.clone(),
                gateways: Vec::new(),
                config: FilterConfig::default(),
            });
        if !plan.gateways.contains(&mesh_ns.gateway) {
            plan.gateways.push(mesh_ns.gateway.clone());
            plan.gateways.sort();
        }
    }
    // Reports are sorted by namespace and name, so the groups are too.
    for report in reports {
        if let Some(group) = &report.published {
            let scope = mesh
                .get(&report.namespace)
                .map(|m| m.plugin_namespace.as_str());
            if let Some(plan) = scope.and_then(|scope| plans.get_mut(scope)) {
                plan.config.groups.push(group.clone());
            }
        }
    }
    plans.into_values().collect()
}

/// The gateway's WasmPlugin (none without groups). One above [`MAX_WASM_PLUGIN_BYTES`]
/// as published (a WasmPlugin, or an EnvoyFilter with `--delivery envoyfilter`) would be
/// refused by the API server, so the gateway keeps its previously published configuration
/// instead (or gets none), and says so in the second value.
pub(super) fn plugin_within_limit(
    gateway: &mut GatewayPlan,
    previous: &PreviousConfigs,
    settings: &Settings,
) -> (Option<WasmPlugin>, Option<OversizedPlugin>) {
    if gateway.config.groups.is_empty() {
        return (None, None);
    }
    let published_len =
        |plugin: &WasmPlugin| GatewayFilter::published_len(plugin, settings.delivery);
    let plugin = WasmPlugin::for_gateway(&gateway.plugin_namespace, &gateway.config, settings);
    let bytes = published_len(&plugin);
    if bytes <= MAX_WASM_PLUGIN_BYTES {
        return (Some(plugin), None);
    }
    // Last-known-good, if it still fits (it may not: a smaller limit, other settings).
    let kept = previous
        .get(&gateway.plugin_namespace)
        .filter(|config| !config.groups.is_empty())
        .map(|config| {
            let plugin = WasmPlugin::for_gateway(&gateway.plugin_namespace, config, settings);
            (config, plugin)
        })
        .filter(|(_, plugin)| published_len(plugin) <= MAX_WASM_PLUGIN_BYTES);
    let too_big = OversizedPlugin {
        plugin_namespace: gateway.plugin_namespace.clone(),
        bytes,
        kept_previous: kept.is_some(),
    };
    match kept {
        Some((config, plugin)) => {
            gateway.config = config.clone();
            (Some(plugin), Some(too_big))
        }
        None => {
            gateway.config = FilterConfig::default();
            (None, Some(too_big))
        }
    }
}

pub(super) fn oversized_notice(too_big: &OversizedPlugin) -> Notice {
    let outcome = if too_big.kept_previous {
        "keeping the previously published configuration"
    } else {
        "no configuration published (no previous one that fits)"
    };
    namespace_notice(
        &too_big.plugin_namespace,
        format!(
            "filter configuration of this gateway is {} bytes as published (WasmPlugin or EnvoyFilter), above the limit of {MAX_WASM_PLUGIN_BYTES} bytes (the API server refuses objects over 1.5 MiB); {outcome}. Fix: split the groups over several gateways with the namespace annotations {GATEWAY_ANNOTATION} (or {MAISTRA_GATEWAY_NAMESPACE} and {MAISTRA_GATEWAY_NAME}), or shorten group and InferenceService names",
            too_big.bytes
        ),
    )
}
