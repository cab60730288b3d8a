//! The planner: observed objects (+ the filter configs published before) -> the
//! resources modelsplit wants, and a report. Pure: no I/O, no clock, no randomness;
//! the same input gives the same plan, sorted, so `render`, `run` and `local` agree.

use crate::report::{GroupReport, GroupState, GrpcLoss, NotReady, Notice, OversizedPlugin};
use crate::resources::wasm_plugin::MAX_WASM_PLUGIN_BYTES;
use crate::resources::{
    self, InferenceService, Namespace, ServingRuntime, VirtualService, WasmPlugin,
};
use crate::rules::{self, GroupProblem, NameClaim, NotExposed, FULL_WEIGHT};
use crate::settings::{GatewayRef, Settings};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use modelsplit_filter::config::{FilterConfig, GroupConfig, MemberConfig};
use std::collections::{BTreeMap, BTreeSet};

/// Label or annotation that puts a namespace in the service mesh.
pub const MESH_MEMBER_KEY: &str = "opendatahub.io/service-mesh";
/// Namespace annotation naming the gateway as `<namespace>/<name>` (later ODH releases).
pub const GATEWAY_ANNOTATION: &str = "opendatahub.io/service-mesh-gw";
/// Namespace annotations naming the gateway (original ODH workflow).
pub const MAISTRA_GATEWAY_NAMESPACE: &str = "maistra.io/gateway-namespace";
pub const MAISTRA_GATEWAY_NAME: &str = "maistra.io/gateway-name";
/// ModelMesh's Service in each namespace, and its ports.
pub const MODELMESH_SERVICE: &str = "modelmesh-serving";
pub const MODELMESH_GRPC_PORT: u32 = 8033;
pub const MODELMESH_REST_PORT: u32 = 8008;
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

/// The gateway routes of one mesh namespace: what its VirtualService expresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceRoutes {
    pub namespace: String,
    pub gateway: GatewayRef,
    pub plugin_namespace: String,
    /// Sorted by name.
    pub models: Vec<ExposedModel>,
}

/// An InferenceService reachable through the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposedModel {
    pub name: String,
    /// Whether it gets the gRPC (`mm-vmodel-id`) route: its name is its namespace's on the gateway.
    pub grpc: bool,
}

impl NamespaceRoutes {
    /// The ModelMesh Service of the namespace.
    pub fn modelmesh_host(&self) -> String {
        format!("{MODELMESH_SERVICE}.{}.svc.cluster.local", self.namespace)
    }
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
    let mesh = mesh_namespaces(&observed.namespaces, settings, &mut notices);
    let models = models(observed, &mesh, settings);

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
        reports.push(plan_group(
            namespace, name, members, &mesh, &models, previous,
        ));
    }

    // gRPC names: per gateway workload, over exposed models and published groups.
    let owners = grpc_owners(&mesh, &models, &reports, &groups, previous);
    decide_group_grpc(&mut reports, &mesh, &owners);

    let routes = namespace_routes(&mesh, &models, &owners, &mut notices);
    let mut gateways = gateway_plans(&mesh, &reports);
    let mut wasm_plugins = Vec::new();
    let mut oversized = Vec::new();
    for gateway in &mut gateways {
        let (plugin, too_big) = plugin_within_limit(gateway, previous, settings);
        wasm_plugins.extend(plugin);
        if let Some(too_big) = too_big {
            notices.push(oversized_notice(&too_big));
            oversized.push(too_big);
        }
    }
    let virtual_services = routes.iter().map(VirtualService::for_namespace).collect();
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

/// The gateway's WasmPlugin (none without groups). One above [`MAX_WASM_PLUGIN_BYTES`]
/// would be refused by the API server, so the gateway keeps its previously published
/// configuration instead (or gets none), and says so in the second value.
fn plugin_within_limit(
    gateway: &mut GatewayPlan,
    previous: &PreviousConfigs,
    settings: &Settings,
) -> (Option<WasmPlugin>, Option<OversizedPlugin>) {
    if gateway.config.groups.is_empty() {
        return (None, None);
    }
    let plugin = WasmPlugin::for_gateway(&gateway.plugin_namespace, &gateway.config, settings);
    let bytes = plugin.serialized_len();
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
        .filter(|(_, plugin)| plugin.serialized_len() <= MAX_WASM_PLUGIN_BYTES);
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

fn oversized_notice(too_big: &OversizedPlugin) -> Notice {
    let outcome = if too_big.kept_previous {
        "keeping the previously published configuration"
    } else {
        "no configuration published (no previous one that fits)"
    };
    namespace_notice(
        &too_big.plugin_namespace,
        format!(
            "filter configuration of this gateway is {} bytes as a WasmPlugin, above the limit of {MAX_WASM_PLUGIN_BYTES} bytes (the API server refuses objects over 1.5 MiB); {outcome}. Fix: split the groups over several gateways with the namespace annotations {GATEWAY_ANNOTATION} (or {MAISTRA_GATEWAY_NAMESPACE} and {MAISTRA_GATEWAY_NAME}), or shorten group and InferenceService names",
            too_big.bytes
        ),
    )
}

/// The namespaces in the mesh, with their gateway; those naming a bad gateway are
/// left out with a notice (binding them to a guessed gateway would be worse).
fn mesh_namespaces(
    namespaces: &[Namespace],
    settings: &Settings,
    notices: &mut Vec<Notice>,
) -> BTreeMap<String, MeshNamespace> {
    let mut mesh = BTreeMap::new();
    for namespace in namespaces {
        let Some(name) = namespace.metadata.name.as_deref() else {
            continue;
        };
        let meta = &namespace.metadata;
        let marked = |v: Option<&str>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        if mesh.contains_key(name)
            || !(marked(resources::label(meta, MESH_MEMBER_KEY))
                || marked(resources::annotation(meta, MESH_MEMBER_KEY)))
        {
            continue;
        }
        match gateway_of(namespace, settings) {
            Ok((gateway, note)) => {
                if let Some(message) = note {
                    notices.push(namespace_notice(name, message));
                }
                let plugin_namespace = settings.plugin_namespace_for(&gateway);
                mesh.insert(
                    name.to_string(),
                    MeshNamespace {
                        gateway,
                        plugin_namespace,
                    },
                );
            }
            Err(message) => notices.push(namespace_notice(name, message)),
        }
    }
    mesh
}

fn namespace_notice(name: &str, message: String) -> Notice {
    Notice {
        kind: "Namespace",
        reason: crate::report::NoticeReason::Planner,
        namespace: String::new(),
        name: name.to_string(),
        message,
    }
}

/// The namespace's gateway from its annotations (either style), else the default.
/// Returns a note when both styles are present and disagree.
fn gateway_of(
    namespace: &Namespace,
    settings: &Settings,
) -> Result<(GatewayRef, Option<String>), String> {
    let meta = &namespace.metadata;
    let single = resources::annotation(meta, GATEWAY_ANNOTATION);
    let maistra_ns = resources::annotation(meta, MAISTRA_GATEWAY_NAMESPACE);
    let maistra_name = resources::annotation(meta, MAISTRA_GATEWAY_NAME);
    let maistra = match (maistra_ns, maistra_name) {
        (Some(ns), Some(name)) => Some(format!("{}/{}", ns.trim(), name.trim()).parse::<GatewayRef>().map_err(|_| {
            format!(
                "annotations {MAISTRA_GATEWAY_NAMESPACE}={ns:?} and {MAISTRA_GATEWAY_NAME}={name:?} do not name a gateway; fix them to take part in the mesh"
            )
        })),
        (None, None) => None,
        _ => {
            return Err(format!(
                "has only one of {MAISTRA_GATEWAY_NAMESPACE} and {MAISTRA_GATEWAY_NAME}; set both (or {GATEWAY_ANNOTATION}: <namespace>/<name>) to take part in the mesh"
            ))
        }
    };
    match (single, maistra) {
        (Some(value), maistra) => {
            let gateway: GatewayRef = value.parse().map_err(|_| {
                format!("annotation {GATEWAY_ANNOTATION}={value:?} must be <namespace>/<name>; fix it to take part in the mesh")
            })?;
            let note = match maistra {
                Some(Ok(other)) if other != gateway => Some(format!(
                    "annotations name two gateways: {GATEWAY_ANNOTATION} {gateway} and maistra.io {other}; using {gateway}"
                )),
                _ => None,
            };
            Ok((gateway, note))
        }
        (None, Some(maistra)) => maistra.map(|g| (g, None)),
        (None, None) => Ok((settings.default_gateway.clone(), None)),
    }
}

/// Every InferenceService by (namespace, name), with its exposure decided.
fn models<'a>(
    observed: &'a Observed,
    mesh: &BTreeMap<String, MeshNamespace>,
    settings: &Settings,
) -> BTreeMap<(&'a str, &'a str), Model<'a>> {
    let mut runtimes: BTreeMap<(&str, &str), &ServingRuntime> = BTreeMap::new();
    for runtime in &observed.serving_runtimes {
        if let Some(name) = runtime.metadata.name.as_deref() {
            let namespace = runtime
                .metadata
                .namespace
                .as_deref()
                .unwrap_or(DEFAULT_NAMESPACE);
            runtimes.entry((namespace, name)).or_insert(runtime);
        }
    }
    let mut models = BTreeMap::new();
    for isvc in &observed.inference_services {
        let Some(name) = isvc.metadata.name.as_deref() else {
            continue;
        };
        let namespace = isvc
            .metadata
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE);
        if models.contains_key(&(namespace, name)) {
            continue;
        }
        let exposure = if !mesh.contains_key(namespace) {
            Err(NotExposed::NamespaceNotInMesh)
        } else {
            exposure(isvc, namespace, &runtimes, settings)
        };
        models.insert(
            (namespace, name),
            Model {
                isvc,
                namespace,
                name,
                exposure,
            },
        );
    }
    models
}

/// Whether an InferenceService of a mesh namespace gets gateway routes.
fn exposure(
    isvc: &InferenceService,
    namespace: &str,
    runtimes: &BTreeMap<(&str, &str), &ServingRuntime>,
    settings: &Settings,
) -> Result<(), NotExposed> {
    if !isvc.is_model_mesh() {
        return Err(NotExposed::NotModelMesh);
    }
    if !settings.require_enable_route {
        return Ok(());
    }
    if let Some(runtime) = isvc.runtime_name() {
        return match runtimes.get(&(namespace, runtime)) {
            None => Err(NotExposed::RuntimeNotFound {
                runtime: runtime.to_string(),
            }),
            Some(r) if r.enables_route() => Ok(()),
            Some(_) => Err(NotExposed::RouteNotEnabled {
                runtime: runtime.to_string(),
            }),
        };
    }
    // No runtime named: ModelMesh picks one that auto-selects the model format.
    let format = isvc.model_format();
    let candidates: Vec<(&str, bool)> = runtimes
        .range((namespace, "")..)
        .take_while(|((ns, _), _)| *ns == namespace)
        .filter(|(_, r)| format.is_some_and(|f| r.auto_selects(f)))
        .map(|((_, name), r)| (*name, r.enables_route()))
        .collect();
    let names = || {
        candidates
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>()
    };
    if candidates.is_empty() {
        Err(NotExposed::NoRuntime {
            format: format.map(str::to_string),
        })
    } else if candidates.iter().all(|(_, enabled)| *enabled) {
        Ok(())
    } else if candidates.iter().all(|(_, enabled)| !*enabled) {
        Err(NotExposed::RouteNotEnabled {
            runtime: names().join(", "),
        })
    } else {
        Err(NotExposed::AmbiguousRuntime {
            candidates: names(),
        })
    }
}

/// Validates one group and decides what the filter gets for it (gRPC decided later).
fn plan_group(
    namespace: &str,
    name: &str,
    members: &[&Model],
    mesh: &BTreeMap<String, MeshNamespace>,
    models: &BTreeMap<(&str, &str), Model>,
    previous: &PreviousConfigs,
) -> GroupReport {
    let mut report = GroupReport {
        namespace: namespace.to_string(),
        name: name.to_string(),
        members: members.iter().map(|m| m.name.to_string()).collect(),
        state: GroupState::Valid,
        published: None,
        grpc_lost: None,
        not_ready: None,
    };
    let Some(mesh_ns) = mesh.get(namespace) else {
        report.state = GroupState::Ignored {
            reason: format!(
                "namespace {namespace} is not in the service mesh (label or annotation {MESH_MEMBER_KEY}=true, and a valid gateway)"
            ),
        };
        return report;
    };

    let mut problems = check_group(namespace, name, members, models);
    let mut configured = None;
    if problems.is_empty() {
        match configured_group(namespace, name, members) {
            Ok(group) => configured = Some(group),
            Err(problem) => problems.push(problem),
        }
    }
    let (state, group) = match configured {
        Some(group) => (GroupState::Valid, Some(group)),
        None => match last_good(
            namespace,
            name,
            members,
            &mesh_ns.plugin_namespace,
            previous,
        ) {
            Some(group) => (GroupState::Stale { problems }, Some(group)),
            None => (GroupState::Invalid { problems }, None),
        },
    };
    report.state = state;
    report.published = group.map(|mut group| {
        report.not_ready = gate_readiness(&mut group, members);
        group
    });
    report
}

/// Every reason the group as configured now cannot be published.
fn check_group(
    namespace: &str,
    name: &str,
    members: &[&Model],
    models: &BTreeMap<(&str, &str), Model>,
) -> Vec<GroupProblem> {
    let mut problems = Vec::new();
    if models.contains_key(&(namespace, name)) {
        problems.push(GroupProblem::NameIsInferenceService {
            name: name.to_string(),
        });
    }
    let mut weights = Vec::new();
    for member in members {
        match member.isvc.weight_annotation() {
            None => problems.push(GroupProblem::MissingWeight {
                member: member.name.to_string(),
            }),
            Some(raw) => match rules::parse_weight(raw) {
                Ok(weight) => weights.push((member.name.to_string(), weight)),
                Err(error) => problems.push(GroupProblem::BadWeight {
                    member: member.name.to_string(),
                    error,
                }),
            },
        }
    }
    if weights.len() == members.len() && weights.iter().map(|(_, w)| w).sum::<u32>() != FULL_WEIGHT
    {
        problems.push(GroupProblem::WrongSum { members: weights });
    }
    for member in members {
        if let Err(why) = &member.exposure {
            problems.push(GroupProblem::MemberNotExposed {
                member: member.name.to_string(),
                why: why.clone(),
            });
        }
    }
    let sticky: BTreeSet<&str> = members
        .iter()
        .filter_map(|m| m.isvc.sticky_header_annotation())
        .map(str::trim)
        .collect();
    if sticky.len() > 1 {
        problems.push(GroupProblem::StickyHeaderConflict {
            values: sticky.iter().map(|s| s.to_string()).collect(),
        });
    }
    problems
}

/// The group as configured (only called once `check_group` found nothing), checked
/// by the filter's own validation so the gateway never receives what it rejects.
fn configured_group(
    namespace: &str,
    name: &str,
    members: &[&Model],
) -> Result<GroupConfig, GroupProblem> {
    let group = GroupConfig {
        namespace: namespace.to_string(),
        name: name.to_string(),
        members: members
            .iter()
            .map(|m| MemberConfig {
                name: m.name.to_string(),
                weight: m
                    .isvc
                    .weight_annotation()
                    .and_then(|raw| rules::parse_weight(raw).ok())
                    .unwrap_or(0),
            })
            .collect(),
        grpc: true,
        sticky_header: members
            .iter()
            .find_map(|m| m.isvc.sticky_header_annotation())
            .map(|s| s.trim().to_string()),
    };
    FilterConfig::with_groups(vec![group.clone()])
        .validate()
        .map_err(|e| GroupProblem::FilterRejects {
            message: e.to_string(),
        })?;
    Ok(group)
}

/// The previously published split of the group, limited to members that are still
/// in the group and exposed (never send traffic outside the group or to no route).
fn last_good(
    namespace: &str,
    name: &str,
    members: &[&Model],
    plugin_namespace: &str,
    previous: &PreviousConfigs,
) -> Option<GroupConfig> {
    let same = |g: &&GroupConfig| g.namespace == namespace && g.name == name;
    // The same gateway first; a namespace that moved gateways keeps its split too.
    let found = previous
        .get(plugin_namespace)
        .and_then(|c| c.groups.iter().find(same))
        .or_else(|| previous.values().flat_map(|c| c.groups.iter()).find(same))?;
    let usable: BTreeSet<&str> = members
        .iter()
        .filter(|m| m.exposure.is_ok())
        .map(|m| m.name)
        .collect();
    let mut group = found.clone();
    group.members.retain(|m| usable.contains(m.name.as_str()));
    group.members.sort_by(|a, b| a.name.cmp(&b.name));
    group.grpc = true;
    FilterConfig::with_groups(vec![group.clone()])
        .validate()
        .ok()?;
    Some(group)
}

/// Gives not-ready members no traffic, leaving the ready members' weights as they
/// are (the filter divides by the sum, so their shares grow in proportion).
fn gate_readiness(group: &mut GroupConfig, members: &[&Model]) -> Option<NotReady> {
    let not_ready: BTreeSet<&str> = members
        .iter()
        .filter(|m| !m.isvc.is_ready())
        .map(|m| m.name)
        .collect();
    let held: Vec<String> = group
        .members
        .iter()
        .filter(|m| not_ready.contains(m.name.as_str()))
        .map(|m| m.name.clone())
        .collect();
    if held.is_empty() {
        return None;
    }
    let ready_weight: u64 = group
        .members
        .iter()
        .filter(|m| !not_ready.contains(m.name.as_str()))
        .map(|m| u64::from(m.weight))
        .sum();
    let redistributed = ready_weight > 0;
    if redistributed {
        for member in &mut group.members {
            if not_ready.contains(member.name.as_str()) {
                member.weight = 0;
            }
        }
    }
    Some(NotReady {
        members: held,
        redistributed,
    })
}

/// Per gateway workload namespace: gRPC name -> the namespace that owns it.
type Owners = BTreeMap<String, BTreeMap<String, String>>;

/// For each gateway workload namespace: which namespace owns each gRPC name.
fn grpc_owners(
    mesh: &BTreeMap<String, MeshNamespace>,
    models: &BTreeMap<(&str, &str), Model>,
    reports: &[GroupReport],
    groups: &BTreeMap<(&str, &str), Vec<&Model>>,
    previous: &PreviousConfigs,
) -> Owners {
    // A group's claim dates from its oldest member, but labels can be moved: a group
    // that was never published could backdate a claim by labelling an old isvc and
    // take a name another namespace holds. Once anything was published, such a group
    // counts as the newest claim; groups published before keep their date.
    let was_published = |namespace: &str, name: &str| {
        previous.is_empty()
            || previous
                .values()
                .flat_map(|c| &c.groups)
                .any(|g| g.namespace == namespace && g.name == name)
    };
    let mut claims: BTreeMap<&str, Vec<NameClaim>> = BTreeMap::new();
    for model in models.values().filter(|m| m.exposure.is_ok()) {
        let Some(mesh_ns) = mesh.get(model.namespace) else {
            continue; // exposed implies a mesh namespace
        };
        claims
            .entry(mesh_ns.plugin_namespace.as_str())
            .or_default()
            .push(NameClaim {
                name: model.name,
                namespace: model.namespace,
                created: model.created(),
            });
    }
    for report in reports.iter().filter(|r| r.published.is_some()) {
        let Some(mesh_ns) = mesh.get(&report.namespace) else {
            continue; // published implies a mesh namespace
        };
        // A group is as old as its oldest member.
        let created = groups
            .get(&(report.namespace.as_str(), report.name.as_str()))
            .into_iter()
            .flatten()
            .filter_map(|m| m.created())
            .min()
            .filter(|_| was_published(&report.namespace, &report.name));
        claims
            .entry(mesh_ns.plugin_namespace.as_str())
            .or_default()
            .push(NameClaim {
                name: &report.name,
                namespace: &report.namespace,
                created,
            });
    }
    let mut owners: Owners = mesh
        .values()
        .map(|m| (m.plugin_namespace.clone(), BTreeMap::new()))
        .collect();
    for (scope, claims) in claims {
        let resolved = rules::resolve_name_claims(claims)
            .into_iter()
            .map(|(name, owner)| (name.to_string(), owner.to_string()))
            .collect();
        owners.insert(scope.to_string(), resolved);
    }
    owners
}

/// A published group answers to gRPC only if its namespace owns the group's name and
/// every member's name on the gateway: the filter rewrites `mm-vmodel-id` to a
/// member, and a member name owned elsewhere would route outside the group.
fn decide_group_grpc(
    reports: &mut [GroupReport],
    mesh: &BTreeMap<String, MeshNamespace>,
    owners: &Owners,
) {
    for report in reports {
        let Some(published) = report.published.as_mut() else {
            continue;
        };
        let scope = mesh.get(&report.namespace).map(|m| &m.plugin_namespace);
        let Some(owners) = scope.and_then(|scope| owners.get(scope)) else {
            continue;
        };
        let names = std::iter::once(&report.name).chain(published.members.iter().map(|m| &m.name));
        let lost = names
            .filter_map(|name| {
                let owner = owners
                    .get(name)
                    .map_or(report.namespace.as_str(), String::as_str);
                (owner != report.namespace).then(|| GrpcLoss {
                    name: name.clone(),
                    owner_namespace: owner.to_string(),
                })
            })
            .next();
        published.grpc = lost.is_none();
        report.grpc_lost = lost;
    }
}

/// The routes of each mesh namespace; models that lose their gRPC name get a notice.
fn namespace_routes(
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
                kind: "InferenceService",
                reason: crate::report::NoticeReason::Planner,
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
fn gateway_plans(
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
