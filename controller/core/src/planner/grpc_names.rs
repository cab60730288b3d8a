//! gRPC names are global on a gateway: which namespace owns each, and which groups
//! keep their gRPC route.

use super::{MeshNamespace, Model, PreviousConfigs};
use crate::report::{GroupReport, GrpcLoss};
use crate::rules::{self, NameClaim};
use std::collections::BTreeMap;

/// Per gateway workload namespace: gRPC name -> the namespace that owns it.
pub(super) type Owners = BTreeMap<String, BTreeMap<String, String>>;

/// For each gateway workload namespace: which namespace owns each gRPC name.
pub(super) fn grpc_owners(
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
pub(super) fn decide_group_grpc(
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
