//! One group: validation, the last-known-good split when it is invalid, readiness.

use super::{MeshNamespace, Model, PreviousConfigs, MESH_MEMBER_KEY};
use crate::report::{GroupReport, GroupState, NotReady};
use crate::rules::{self, GroupProblem, FULL_WEIGHT};
use modelsplit_filter::config::{FilterConfig, GroupConfig, MemberConfig};
use std::collections::{BTreeMap, BTreeSet};

/// Validates one group and decides what the filter gets for it (gRPC decided later).
pub(super) fn plan_group(
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
        // A declared rollout reads each member's outcomes, which the filter then measures
        // (on a gateway without route statistics, they are the only ones).
        observe: members
            .iter()
            .any(|m| m.isvc.rollout_annotation().is_some()),
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
