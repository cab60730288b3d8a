//! Which InferenceServices the gateway routes to (ModelMesh, a route-enabled runtime).

use super::{MeshNamespace, Model, Observed, DEFAULT_NAMESPACE};
use crate::resources::{InferenceService, ServingRuntime};
use crate::rules::NotExposed;
use crate::settings::Settings;
use std::collections::BTreeMap;

/// Every InferenceService by (namespace, name), with its exposure decided.
pub(super) fn models<'a>(
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
