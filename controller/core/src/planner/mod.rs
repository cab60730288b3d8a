//! The planner: observed objects (+ the filter configs published before) -> the
//! resources modelsplit wants, and a report. Pure: no I/O, no clock, no randomness;
//! the same input gives the same plan, sorted, so `render`, `run` and `local` agree.
//!
//! One module per concern, in the order [`plan`] runs them: [`mesh`] (namespaces and
//! their gateways), [`exposure`] (which InferenceServices are routed), [`groups`]
//! (validation, last-known-good, readiness), [`grpc_names`] (ownership of gRPC names on
//! a gateway), [`assemble`] (routes, filter configs, WasmPlugins within the size limit).

mod assemble;
mod exposure;
mod groups;
mod grpc_names;
mod mesh;

use crate::encode::virtual_service::virtual_service;
use crate::report::{GroupReport, Notice, OversizedPlugin};
use crate::resources::{InferenceService, Namespace, ServingRuntime, VirtualService, WasmPlugin};
use crate::rules::NotExposed;
use crate::settings::GatewayRef;
use crate::Settings;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use modelsplit_filter::config::{FilterConfig, DEFAULT_REST_PREFIX};
use std::collections::BTreeMap;

pub use crate::routing::{ExposedModel, NamespaceRoutes};

/// Label or annotation that puts a namespace in the service mesh.
pub const MESH_MEMBER_KEY: &str = "opendatahub.io/service-mesh";

/// Namespace annotation naming the gateway as `<namespace>/<name>` (later ODH releases).
pub const GATEWAY_ANNOTATION: &str = "opendatahub.io/service-mesh-gw";

/// Namespace annotations naming the gateway (original ODH workflow).
pub const MAISTRA_GATEWAY_NAMESPACE: &str = "maistra.io/gateway-namespace";

pub const MAISTRA_GATEWAY_NAME: &str = "maistra.io/gateway-name";

/// Namespace of objects that name none, as `kubectl apply` without `-n` would use.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Everything the planner looks at (any order; duplicates keep the first).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub namespaces: Vec<Namespace>,
    pub serving_runtimes: Vec<ServingRuntime>,
    pub inference_services: Vec<InferenceService>,
}

/// Filter configurations published before, by WasmPlugin namespace: the source of
/// last-known-good splits.
pub type PreviousConfigs = BTreeMap<String, FilterConfig>;

/// The desired state, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One per gateway workload namespace serving a mesh namespace (may have no groups).
    pub gateways: Vec<GatewayPlan>,
    /// One per mesh namespace that has an exposed InferenceService.
    pub routes: Vec<NamespaceRoutes>,
    /// One per gateway workload namespace that has at least one group.
    pub wasm_plugins: Vec<WasmPlugin>,
    /// One per entry of `routes`.
    pub virtual_services: Vec<VirtualService>,
    /// One per group seen in any namespace, sorted by namespace and name.
    pub groups: Vec<GroupReport>,
    pub notices: Vec<Notice>,
    /// Gateways whose configuration exceeds [`MAX_WASM_PLUGIN_BYTES`] and was not published.
    pub oversized: Vec<OversizedPlugin>,
}

/// The filter configuration one gateway workload gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPlan {
    /// Where the WasmPlugin lives (the gateway's namespace unless overridden).
    pub plugin_namespace: String,
    /// The Istio Gateways whose mesh namespaces this configuration serves.
    pub gateways: Vec<GatewayRef>,
    pub config: FilterConfig,
}

impl Plan {
    /// The groups `--strict` fails on.
    pub fn invalid_groups(&self) -> impl Iterator<Item = &GroupReport> {
        self.groups.iter().filter(|g| g.state.is_invalid())
    }

    /// The published configurations, as the next plan's `previous`.
    pub fn published_configs(&self) -> PreviousConfigs {
        self.gateways
            .iter()
            .filter(|g| !g.config.groups.is_empty())
            .map(|g| (g.plugin_namespace.clone(), g.config.clone()))
            .collect()
    }
}

/// Where a mesh namespace's traffic enters.
#[derive(Debug, Clone)]
struct MeshNamespace {
    gateway: GatewayRef,
    plugin_namespace: String,
}

/// An InferenceService with the facts the rules need.
struct Model<'a> {
    isvc: &'a InferenceService,
    namespace: &'a str,
    name: &'a str,
    exposure: Result<(), NotExposed>,
}

impl Model<'_> {
    fn created(&self) -> Option<&Time> {
        self.isvc.metadata.creation_timestamp.as_ref()
    }
}

/// Plans the whole desired state. See docs/design.md section 4 for the rules.
pub fn plan(observed: &Observed, previous: &PreviousConfigs, settings: &Settings) -> Plan {
    let mut notices = Vec::new();
    let mesh = mesh::mesh_namespaces(&observed.namespaces, settings, &mut notices);
    let models = exposure::models(observed, &mesh, settings);

    // Groups by (namespace, group name), members in name order.
    let mut groups: BTreeMap<(&str, &str), Vec<&Model>> = BTreeMap::new();
    for model in models.values() {
        if let Some(group) = model.isvc.group() {
            groups
                .entry((model.namespace, group))
                .or_default()
                .push(model);
        }
    }

    let mut reports = Vec::new();
    for (&(namespace, name), members) in &groups {
        reports.push(groups::plan_group(
            namespace, name, members, &mesh, &models, previous,
        ));
    }

    // gRPC names: per gateway workload, over exposed models and published groups.
    let owners = grpc_names::grpc_owners(&mesh, &models, &reports, &groups, previous);
    grpc_names::decide_group_grpc(&mut reports, &mesh, &owners);

    let mut routes = assemble::namespace_routes(&mesh, &models, &owners, &mut notices);
    let mut gateways = assemble::gateway_plans(&mesh, &reports);
    let mut wasm_plugins = Vec::new();
    let mut oversized = Vec::new();
    for gateway in &mut gateways {
        let (plugin, too_big) = assemble::plugin_within_limit(gateway, previous, settings);
        wasm_plugins.extend(plugin);
        if let Some(too_big) = too_big {
            notices.push(assemble::oversized_notice(&too_big));
            oversized.push(too_big);
        }
    }
    // The routes follow the REST prefix of the filter config their gateway gets.
    for namespace in &mut routes {
        namespace.rest_prefix = rest_prefix_of(&gateways, &namespace.plugin_namespace).to_string();
    }
    let virtual_services = routes.iter().map(virtual_service).collect();
    notices.sort();
    Plan {
        gateways,
        routes,
        wasm_plugins,
        virtual_services,
        groups: reports,
        notices,
        oversized,
    }
}

fn rest_prefix_of<'a>(gateways: &'a [GatewayPlan], plugin_namespace: &str) -> &'a str {
    gateways
        .iter()
        .find(|g| g.plugin_namespace == plugin_namespace)
        .map_or(DEFAULT_REST_PREFIX, |g| g.config.rest_prefix.as_str())
}
