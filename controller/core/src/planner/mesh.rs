//! Which namespaces take part in the mesh, and the gateway each one's traffic enters by.

use super::{
    MeshNamespace, GATEWAY_ANNOTATION, MAISTRA_GATEWAY_NAME, MAISTRA_GATEWAY_NAMESPACE,
    MESH_MEMBER_KEY,
};
use crate::report::{Notice, NoticeReason};
use crate::resources::{self, Namespace, ObjectKind};
use crate::settings::{GatewayRef, Settings};
use std::collections::BTreeMap;

/// The namespaces in the mesh, with their gateway; those naming a bad gateway are
/// left out with a notice (binding them to a guessed gateway would be worse).
pub(super) fn mesh_namespaces(
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

pub(super) fn namespace_notice(name: &str, message: String) -> Notice {
    Notice {
        kind: ObjectKind::Namespace,
        reason: NoticeReason::Planner,
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
